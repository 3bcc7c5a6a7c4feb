package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/test/harness"
	"cellos.dev/cellos-operator/test/localenv"
)

// benchNamespace is where every run's objects and the cursor live.
const benchNamespace = "cellos-bench"

// cluster is one fresh control plane, kube-apiserver and etcd from bin/ with
// the CRDs installed, and the namespace the run writes to.
type cluster struct {
	cp   *localenv.ControlPlane
	stop func()
	// cfg and c reach the API server as its administrator, without a
	// client-side rate limit: API Priority and Fairness is the only limit,
	// as for the operator, whose client has none either.
	cfg  *rest.Config
	c    client.Client
	disc *discovery.DiscoveryClient
	ns   string
}

func newCluster(ctx context.Context) (*cluster, error) {
	cp, stop, err := localenv.NewControlPlane("")
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = -1, -1
	c, err := client.New(cfg, client.Options{Scheme: cp.Scheme})
	if err != nil {
		stop()
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		stop()
		return nil, err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: benchNamespace}}
	if err := c.Create(ctx, ns); err != nil {
		stop()
		return nil, fmt.Errorf("creating namespace: %w", err)
	}
	// Discovery and the connection, before anything is timed: the client
	// maps kinds to resources on first use, as the operator does at start.
	for _, list := range []client.ObjectList{&cellosv1.FormationList{}, &cellosv1.CellList{}, &corev1.ConfigMapList{}} {
		if err := c.List(ctx, list, client.InNamespace(benchNamespace)); err != nil {
			stop()
			return nil, fmt.Errorf("warming the client up: %w", err)
		}
	}
	return &cluster{cp: cp, stop: stop, cfg: cfg, c: c, disc: disc, ns: benchNamespace}, nil
}

// requestKey is one series of apiserver_request_total, less the labels that
// do not tell writes apart.
type requestKey struct {
	Resource, Subresource, Verb, Code string
}

// writeVerbs are the verbs of apiserver_request_total that change state.
var writeVerbs = map[string]bool{"POST": true, "PUT": true, "PATCH": true, "DELETE": true, "DELETECOLLECTION": true, "APPLY": true}

// requests scrapes the API server's own count of the requests it served,
// apiserver_request_total, from its /metrics with the administrator's
// credentials, summed by resource, subresource, verb and code.
func (cl *cluster) requests(ctx context.Context) (map[requestKey]float64, error) {
	body, err := cl.disc.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("scraping the API server's /metrics: %w", err)
	}
	out := map[requestKey]float64{}
	for line := range strings.SplitSeq(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, "apiserver_request_total{")
		if !ok {
			continue
		}
		end := strings.LastIndexByte(rest, '}')
		if end < 0 {
			continue
		}
		labels := parseLabels(rest[:end])
		v, err := strconv.ParseFloat(strings.TrimSpace(rest[end+1:]), 64)
		if err != nil {
			continue
		}
		out[requestKey{labels["resource"], labels["subresource"], labels["verb"], labels["code"]}] += v
	}
	return out, nil
}

// parseLabels reads a Prometheus text-format label set, `a="x",b="y"`.
func parseLabels(s string) map[string]string {
	labels := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		name := strings.TrimLeft(s[:eq], ", ")
		var b strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
			}
			b.WriteByte(s[i])
		}
		labels[name] = b.String()
		if i+1 > len(s) {
			break
		}
		s = s[i+1:]
	}
	return labels
}

// writeCounts is what a run wrote, from two scrapes of apiserver_request_total.
type writeCounts struct {
	// ByKind counts writes by "resource[/subresource] VERB", all codes.
	ByKind map[string]float64
	// Total is every write but the API server's own lease renewals.
	Total float64
	// Objects is the writes to Formations and Cells, status included.
	Objects float64
	// Failed is writes answered with a 4xx or 5xx code, conflicts included.
	Failed float64
}

func diffWrites(before, after map[requestKey]float64) writeCounts {
	w := writeCounts{ByKind: map[string]float64{}}
	for k, v := range after {
		d := v - before[k]
		if d <= 0 || !writeVerbs[k.Verb] || k.Resource == "leases" {
			continue
		}
		name := k.Resource
		if k.Subresource != "" {
			name += "/" + k.Subresource
		}
		w.ByKind[name+" "+k.Verb] += d
		w.Total += d
		if k.Resource == "formations" || k.Resource == "cells" {
			w.Objects += d
		}
		if strings.HasPrefix(k.Code, "4") || strings.HasPrefix(k.Code, "5") {
			w.Failed += d
		}
	}
	return w
}

// natsEnv is an embedded JetStream server with the stream, in a folder of
// its own.
type natsEnv struct {
	srv    *server.Server
	dir    string
	url    string
	nc     *nats.Conn
	js     natsjs.JetStream
	stream store.Stream
}

func newNATS(ctx context.Context) (*natsEnv, error) {
	dir, err := os.MkdirTemp("", "cellos-bench-nats-")
	if err != nil {
		return nil, err
	}
	srv, err := localenv.RunJetStream(dir, 0, nil)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	n := &natsEnv{srv: srv, dir: dir, url: srv.ClientURL()}
	if n.nc, err = nats.Connect(n.url, nats.MaxReconnects(-1)); err != nil {
		n.close()
		return nil, err
	}
	if n.js, err = natsjs.New(n.nc); err != nil {
		n.close()
		return nil, err
	}
	s, err := jetstream.EnsureStream(ctx, n.js, jetstream.DefaultStreamName)
	if err != nil {
		n.close()
		return nil, err
	}
	n.stream = store.Stream{Name: jetstream.DefaultStreamName, Created: s.CachedInfo().Created}
	return n, nil
}

func (n *natsEnv) close() {
	if n.nc != nil {
		n.nc.Close()
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	_ = os.RemoveAll(n.dir)
}

// cpuMeter tells how much of the machine other processes took during a
// run: every figure here depends on the API server having the cores, and
// the machine may be shared.
type cpuMeter struct {
	pids  []int
	at    time.Time
	busy  int64 // jiffies the machine was busy, all CPUs
	ours  int64 // jiffies of our processes
	each  map[int]int64
	cores int
}

// ourPIDs are this process, the operator's if any, and the control plane's
// kube-apiserver and etcd.
func (cl *cluster) ourPIDs(extra ...int) []int {
	pids := append([]int{os.Getpid()}, extra...)
	for _, pid := range cl.controlPlanePIDs() {
		pids = append(pids, pid)
	}
	return pids
}

// controlPlanePIDs are the control plane's processes by name
// (kube-apiserver, etcd), found by the folder they were started with: the
// harness does not start them itself, envtest does.
func (cl *cluster) controlPlanePIDs() map[string]int {
	pids := map[string]int{}
	dir := filepath.Dir(cl.cp.KubeconfigPath)
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(cmd), dir+"/") {
			pids[procName(pid)] = pid
		}
	}
	return pids
}

// controlPlaneRSS is the resident memory now (VmRSS) of kube-apiserver and
// etcd, in MiB, by name.
func (cl *cluster) controlPlaneRSS() map[string]float64 {
	rss := map[string]float64{}
	for name, pid := range cl.controlPlanePIDs() {
		if mib, err := rssMiB(pid); err == nil {
			rss[name] = mib
		}
	}
	return rss
}

// rssMiB is a process's resident memory now, in MiB.
func rssMiB(pid int) (float64, error) {
	kib, err := harness.RSSKiB(pid)
	return float64(kib) / 1024, err
}

// procName is a process's command name, as /proc/<pid>/comm holds it.
func procName(pid int) string {
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return strconv.Itoa(pid)
	}
	return strings.TrimSpace(string(comm))
}

func startCPUMeter(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, at: time.Now(), cores: runtime.NumCPU()}
	m.busy, m.ours, m.each = m.sample()
	return m
}

func (m *cpuMeter) sample() (busy, ours int64, each map[int]int64) {
	each = map[int]int64{}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		line, _, _ := strings.Cut(string(b), "\n")
		f := strings.Fields(line)
		// cpu user nice system idle iowait irq softirq steal ...
		for i, v := range f[1:] {
			if i == 3 || i == 4 {
				continue // idle, iowait
			}
			if i > 7 {
				break // guest time is counted in user already
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			busy += n
		}
	}
	for _, pid := range m.pids {
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			s := string(stat)
			fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
			u, _ := strconv.ParseInt(fields[11], 10, 64)
			st, _ := strconv.ParseInt(fields[12], 10, 64)
			ours += u + st
			each[pid] = u + st
		}
	}
	return busy, ours, each
}

// cpuUse is what a meter read: the cores others kept busy, and the cores
// each of our processes used, by its name (the harness, kube-apiserver,
// etcd, manager), on average over seconds.
type cpuUse struct {
	others  float64
	cores   map[string]float64
	seconds float64
}

// cpuSeconds is the CPU time (user and system) the named processes used.
func (u cpuUse) cpuSeconds(names ...string) float64 {
	total := 0.0
	for _, n := range names {
		total += u.cores[n]
	}
	return total * u.seconds
}

// controlPlaneCPU is the CPU time kube-apiserver and etcd used: what the
// writes cost the API server, whoever made them.
func (u cpuUse) controlPlaneCPU() float64 { return u.cpuSeconds("kube-apiserver", "etcd") }

// read returns what the processes used since the start.
func (m *cpuMeter) read() cpuUse {
	busy, total, each := m.sample()
	secs := time.Since(m.at).Seconds()
	if secs <= 0 {
		return cpuUse{}
	}
	const clockTicks = 100
	u := cpuUse{cores: map[string]float64{}, seconds: secs}
	for pid, t := range each {
		name := "harness"
		if pid != os.Getpid() {
			name = procName(pid)
		}
		u.cores[name] += float64(t-m.each[pid]) / clockTicks / secs
	}
	u.others = max(0, float64((busy-m.busy)-(total-m.ours))/clockTicks/secs)
	return u
}
