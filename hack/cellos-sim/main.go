// Command cellos-sim publishes simulated cellos lifecycles to a NATS
// JetStream server, so the operator can be demonstrated and exercised without
// a cellos installation. The same --seed replays the same events.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"iter"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"cellos.dev/cellos-operator/internal/fold"
	cellosjs "cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/simulator"
)

type options struct {
	natsURL, stream string
	rate            float64
	formations      int
	cells           int
	seed            uint64
	continuous      bool
	failureRate     float64
	degradedRate    float64
}

func main() {
	opts, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintf(os.Stderr, "cellos-sim: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, opts, log); err != nil {
		stop()
		fmt.Fprintf(os.Stderr, "cellos-sim: %v\n", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("cellos-sim", flag.ExitOnError)
	fs.StringVar(&o.natsURL, "nats-url", cellosjs.URLFromEnv(), "NATS server URL (env NATS_URL)")
	fs.StringVar(&o.stream, "stream", cellosjs.DefaultStreamName, "JetStream stream to publish to; created when missing")
	fs.Float64Var(&o.rate, "rate", 20, "events per second; 0 publishes as fast as the server acknowledges")
	fs.IntVar(&o.formations, "formations", 5, "formations to play; with --continuous, how many run at once")
	fs.IntVar(&o.cells, "cells", simulator.DefaultCellsPerFormation, "cells per formation")
	fs.Uint64Var(&o.seed, "seed", 0, "random seed, to replay a run (default: time-based, printed at start)")
	fs.BoolVar(&o.continuous, "continuous", false, "keep starting formations until interrupted")
	fs.Float64Var(&o.failureRate, "failure-rate", 0.2, "probability that a formation fails (0 to 1)")
	fs.Float64Var(&o.degradedRate, "degraded-rate", 0.2, "probability that a formation is degraded for a while (0 to 1)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	seedSet := false
	fs.Visit(func(f *flag.Flag) { seedSet = seedSet || f.Name == "seed" })
	if !seedSet {
		o.seed = uint64(time.Now().UnixNano())
	}

	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	case !(o.rate >= 0): // also rejects NaN
		return o, fmt.Errorf("--rate %v: want 0 or more events per second", o.rate)
	case o.formations < 1:
		return o, fmt.Errorf("--formations %d: want at least 1", o.formations)
	case o.cells < 1:
		return o, fmt.Errorf("--cells %d: want at least 1", o.cells)
	case !(o.failureRate >= 0 && o.failureRate <= 1):
		return o, fmt.Errorf("--failure-rate %v: want a probability from 0 to 1", o.failureRate)
	case !(o.degradedRate >= 0 && o.degradedRate <= 1):
		return o, fmt.Errorf("--degraded-rate %v: want a probability from 0 to 1", o.degradedRate)
	}
	return o, nil
}

// redactedURL is the NATS URL without its password, for errors and logs;
// one that does not parse is not repeated at all, as it may hold one.
func redactedURL(s string) (string, bool) {
	var shown []string
	for _, part := range strings.Split(s, ",") {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			return "", false
		}
		shown = append(shown, u.Redacted())
	}
	return strings.Join(shown, ","), true
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	shown, ok := redactedURL(o.natsURL)
	if !ok {
		return fmt.Errorf("--nats-url is not a valid URL (not repeated here, as it may hold a password): percent-encode / # ? @ : in a user name or password")
	}
	nc, err := nats.Connect(o.natsURL, nats.Name("cellos-sim"))
	if err != nil {
		return fmt.Errorf("connect to NATS at %s: %w", shown, err)
	}
	defer nc.Close()
	js, err := natsjs.New(nc)
	if err != nil {
		return fmt.Errorf("open JetStream: %w", err)
	}
	if _, err := cellosjs.EnsureStream(ctx, js, o.stream); err != nil {
		return fmt.Errorf("ensure stream: %w", err)
	}

	cfg := simulator.Config{
		Seed:              o.seed,
		Formations:        o.formations,
		CellsPerFormation: o.cells,
		FailureRate:       o.failureRate,
		DegradedRate:      o.degradedRate,
	}
	if o.continuous {
		cfg.Formations, cfg.InFlight = 0, o.formations
	}
	log.Info("Simulating cellos", "seed", o.seed, "natsUrl", shown, "stream", o.stream,
		"rate", o.rate, "formations", o.formations, "cells", o.cells, "continuous", o.continuous)

	begin := time.Now()
	var started, finished int
	events := logFormations(simulator.NewGenerator(cfg).All(), log, &started, &finished)
	n, err := simulator.Publish(ctx, js, events, o.rate)
	elapsed := time.Since(begin)
	log.Info("Published", "events", n, "formationsStarted", started, "formationsFinished", finished,
		"elapsed", elapsed.Round(time.Millisecond), "eventsPerSecond", fmt.Sprintf("%.1f", float64(n)/elapsed.Seconds()),
		"interrupted", ctx.Err() != nil, "seed", o.seed)
	if err != nil {
		return fmt.Errorf("publish events: %w", err)
	}
	if errors.Is(ctx.Err(), context.Canceled) {
		log.Info("Stopped on signal")
	}
	return nil
}

// logFormations logs each formation as it starts and ends, counting both.
func logFormations(events iter.Seq[simulator.Event], log *slog.Logger, started, finished *int) iter.Seq[simulator.Event] {
	return func(yield func(simulator.Event) bool) {
		for ev := range events {
			switch phase := ev.FormationPhase(); phase {
			case fold.PhaseCreated:
				*started++
				log.Info("Formation started", "name", ev.FormationName, "formationId", ev.FormationID)
			case fold.PhaseCompleted, fold.PhaseFailed:
				*finished++
				log.Info("Formation finished", "name", ev.FormationName, "formationId", ev.FormationID, "phase", phase)
			}
			if !yield(ev) {
				return
			}
		}
	}
}
