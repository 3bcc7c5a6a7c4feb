// Command cellos-dev is the local playground behind `make dev`: a control
// plane, JetStream, the operator and a simulated supervisor, on this machine,
// until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"cellos.dev/cellos-operator/hack/cellos-dev/playground"
)

func main() {
	cfg := playground.Config{Steps: os.Stdout, Logs: os.Stderr}
	flag.StringVar(&cfg.StateDir, "state-dir", ".dev", "Folder for the kubeconfig, etcd's data and the JetStream store; emptied at start.")
	flag.IntVar(&cfg.NATSPort, "nats-port", 4222, "Port of the embedded JetStream server; 0 picks a free one.")
	flag.StringVar(&cfg.ManagerBin, "manager", "bin/manager", "The operator binary.")
	flag.StringVar(&cfg.KubectlBin, "kubectl", "bin/kubectl", "The kubectl binary to suggest.")
	flag.Float64Var(&cfg.Rate, "rate", 5, "Events per second the simulated supervisor publishes.")
	flag.IntVar(&cfg.Simulation.InFlight, "formations", 3, "Formations in flight at once.")
	flag.IntVar(&cfg.Simulation.CellsPerFormation, "cells", 3, "Cells per formation.")
	flag.Float64Var(&cfg.Simulation.FailureRate, "failure-rate", 0.2, "Probability that a formation fails.")
	flag.Float64Var(&cfg.Simulation.DegradedRate, "degraded-rate", 0.2, "Probability that a formation reports degraded once.")
	flag.Uint64Var(&cfg.Simulation.Seed, "seed", uint64(time.Now().UnixNano()), "Seed of the simulation, to replay one.")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := playground.Run(ctx, cfg); err != nil {
		fmt.Fprintln(os.Stderr, "cellos-dev:", err)
		os.Exit(1)
	}
}
