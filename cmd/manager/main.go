// Command manager runs the cellos operator: it projects the cellos event
// stream on NATS JetStream into Formation and Cell objects.
package main

import (
	"context"
	"flag"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	natsjs "github.com/nats-io/nats.go/jetstream"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	cellosv1 "cellos.dev/cellos-operator/api/v1"
	"cellos.dev/cellos-operator/controllers"
	"cellos.dev/cellos-operator/internal/checkpoint"
	"cellos.dev/cellos-operator/internal/cursor"
	"cellos.dev/cellos-operator/internal/fence"
	"cellos.dev/cellos-operator/internal/fold"
	"cellos.dev/cellos-operator/internal/ingest"
	"cellos.dev/cellos-operator/internal/jetstream"
	"cellos.dev/cellos-operator/internal/natsconn"
	"cellos.dev/cellos-operator/internal/publish"
	"cellos.dev/cellos-operator/internal/store"
	"cellos.dev/cellos-operator/internal/tombstone"
)

// The operator's own needs; each controller declares the access to its kind.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=system,resources=leases,verbs=create
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=system,resources=leases,resourceNames=cellos-operator.cellos.dev,verbs=get;update
// +kubebuilder:rbac:groups="",namespace=system,resources=events,verbs=create;patch
// The Warning Events on the cursor ConfigMap, in the operator's namespace
// even when --watch-namespaces leaves it out.
// +kubebuilder:rbac:groups=events.k8s.io,namespace=system,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,verbs=create
// +kubebuilder:rbac:groups="",namespace=system,resources=configmaps,resourceNames=cellos-projection-cursor,verbs=get;update

// serviceAccountNamespaceFile is where Kubernetes tells a pod its namespace.
const serviceAccountNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

// cgroupRoot is where a container sees its own cgroup, and so its memory
// limit.
const cgroupRoot = "/sys/fs/cgroup"

func main() {
	if err := run(); err != nil {
		ctrl.Log.WithName("setup").Error(err, "Operator failed")
		os.Exit(1)
	}
}

type options struct {
	stream, namespace, cursorConfigMap       string
	watchNamespaces                          string
	publishSubjectPrefix, tombstoneBucket    string
	checkpointBucket                         string
	checkpointInterval                       time.Duration
	nats                                     natsconn.Options
	createStream, leaderElect                bool
	lease                                    leaseTimings
	metricsAddr, probeAddr, pprofAddr        string
	metricsSecure                            bool
	metricsCertDir                           string
	flushWindow, countWindow, commitInterval time.Duration
	writers, maxUnflushed, maxEventBytes     int
	consumerBufferBytes                      int
	ttls                                     fold.TTLs
	goMemLimitRatio                          float64
	gcPercent                                int
}

// parseFlags reads the command line, and sets up logging as it asks.
func parseFlags() options {
	var opts options
	opts.nats.BindFlags(flag.CommandLine)
	flag.StringVar(&opts.stream, "stream", jetstream.DefaultStreamName, "Name of the JetStream stream that carries the cellos events.")
	flag.BoolVar(&opts.createStream, "create-stream", true, "Create the stream when it is missing. With false the operator never creates it, and waits, unready, until it exists.")
	flag.StringVar(&opts.publishSubjectPrefix, "publish-subject-prefix", fold.DefaultOperatorPrefix, "Subject prefix of the events the operator publishes for declared Formations; they go to <prefix>.formation.<formationId>.")
	flag.StringVar(&opts.tombstoneBucket, "tombstone-bucket", tombstone.DefaultBucket, "JetStream KV bucket, in the stream's NATS, that remembers the formations whose declared Formation was deleted, for longer than the stream keeps their events.")
	flag.StringVar(&opts.checkpointBucket, "checkpoint-bucket", checkpoint.DefaultBucket, "JetStream Object Store bucket, in the stream's NATS, that keeps the checkpoint of the fold, so that a start folds only the events after it. Created at start unless --create-stream=false, which expects it created.")
	flag.DurationVar(&opts.checkpointInterval, "checkpoint-interval", time.Minute, "How often the leader checkpoints the fold (and once on a graceful stop); a start folds at most about this much of the stream's events. 0 disables checkpoints: every start folds the stream from its first event.")
	flag.StringVar(&opts.namespace, "namespace", "", "Namespace for objects first seen in the stream (default: the operator's namespace).")
	flag.StringVar(&opts.watchNamespaces, "watch-namespaces", "", "Comma-separated namespaces the operator watches and writes Formations and Cells in (default: all); --namespace must be one of them.")
	flag.StringVar(&opts.cursorConfigMap, "cursor-configmap", "cellos-projection-cursor", "Name of the ConfigMap, in the operator's namespace, that holds the cursor: the low watermark of the stream sequences reflected in status.")
	flag.BoolVar(&opts.leaderElect, "leader-elect", false, "Elect a leader through a Lease, so that only one replica writes; the others fold the stream too, and take over warm.")
	flag.DurationVar(&opts.lease.duration, "leader-elect-lease-duration", defaultLease.duration, "How long a standby waits, after the Lease's last renewal it saw, before it takes the Lease over; a whole number of seconds, as the Lease records it.")
	flag.DurationVar(&opts.lease.renewDeadline, "leader-elect-renew-deadline", defaultLease.renewDeadline, "How long the leader keeps trying to renew its Lease before it gives up leading and exits; shorter than the lease duration.")
	flag.DurationVar(&opts.lease.retryPeriod, "leader-elect-retry-period", defaultLease.retryPeriod, "How often the leader renews its Lease, and about how often a standby tries to take it over; shorter than the renew deadline.")
	flag.StringVar(&opts.metricsAddr, "metrics-bind-address", "", "Address of the Prometheus metrics endpoint (default :8443, or :8080 with --metrics-secure=false); 0 disables it.")
	flag.BoolVar(&opts.metricsSecure, "metrics-secure", true, "Serve metrics over HTTPS to clients the API server authenticates and authorizes (get on the non-resource URL /metrics); false serves plain HTTP to anyone, for local use.")
	flag.StringVar(&opts.metricsCertDir, "metrics-cert-dir", "", "Folder with tls.crt and tls.key for the metrics endpoint (default: a self-signed certificate generated at start).")
	flag.StringVar(&opts.probeAddr, "health-probe-bind-address", ":8081", "Address of the /healthz and /readyz probes; 0 disables them.")
	flag.StringVar(&opts.pprofAddr, "pprof-bind-address", "", "Address that serves Go's profiles (/debug/pprof/) in plain HTTP, for diagnosing memory and CPU; off by default: bind it to a loopback address and reach it with kubectl port-forward.")
	flag.DurationVar(&opts.flushWindow, "flush-window", 250*time.Millisecond, "How long events on one object gather before its status is written.")
	flag.DurationVar(&opts.countWindow, "count-window", time.Second, "How long the fold's changes to a Formation's cells gather before its cell counts are written; its phase still follows --flush-window.")
	flag.DurationVar(&opts.commitInterval, "cursor-commit-interval", time.Second, "How often the cursor ConfigMap is committed.")
	flag.IntVar(&opts.writers, "concurrent-writes", 16, "How many objects of each kind may be written at once (a reconcile writes one object, with up to two requests).")
	flag.IntVar(&opts.maxEventBytes, "max-event-bytes", fold.DefaultMaxEventBytes, "The largest message folded, payload and headers, in bytes; a larger one is rejected before it is decoded. A stream the operator creates refuses messages over 1 MiB at publish.")
	flag.IntVar(&opts.maxUnflushed, "max-unflushed-objects", 10000, "How many objects may await their status write before the fold stops pulling the stream, which bounds memory while the API server is away; 0 for no bound.")
	flag.IntVar(&opts.consumerBufferBytes, "consumer-buffer-bytes", jetstream.DefaultBufferBytes, "Bytes each pull from the stream may bring, which bounds the events buffered in memory to about twice this; raised to the NATS server's max_payload when below it.")
	flag.DurationVar(&opts.ttls.Cell, "cell-ttl", time.Hour, "How long a Cell stays after it was destroyed (status.finishedAt), before the operator deletes it; 0 keeps Cells for ever.")
	flag.DurationVar(&opts.ttls.Formation, "formation-ttl", 24*time.Hour, "How long a Formation the operator created from the stream stays after it succeeded, failed or was cancelled (status.finishedAt), before the operator deletes it with its Cells; 0 keeps them for ever. Declared Formations are never deleted by the operator.")
	zapOpts := zap.Options{}
	flag.Float64Var(&opts.goMemLimitRatio, "auto-gomemlimit-ratio", 0.9, "The Go runtime's soft memory limit, as a share of the container's memory limit (its cgroup's), so that the garbage collector works harder near the limit rather than the container being killed for memory; 0 turns it off. GOMEMLIMIT, when set, wins.")
	flag.IntVar(&opts.gcPercent, "gogc", 50, "The garbage collector's target, as GOGC: the heap grows to (1 + gogc/100) times what the last collection kept. 50 costs a live object about a quarter less memory than Go's default 100, for a little more CPU. GOGC, when set, wins.")
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))
	return opts
}

func run() error {
	opts := parseFlags()
	setupLog := ctrl.Log.WithName("setup")
	if opts.consumerBufferBytes <= 0 {
		return fmt.Errorf("--consumer-buffer-bytes %d: must be positive", opts.consumerBufferBytes)
	}
	if opts.checkpointInterval < 0 {
		return fmt.Errorf("--checkpoint-interval %s: must be 0 (no checkpoints) or positive", opts.checkpointInterval)
	}
	if opts.ttls.Cell < 0 || opts.ttls.Formation < 0 {
		return fmt.Errorf("--cell-ttl %s, --formation-ttl %s: a TTL must be 0 (keep for ever) or positive", opts.ttls.Cell, opts.ttls.Formation)
	}
	if err := opts.lease.validate(); err != nil {
		return err
	}
	if err := setMemoryLimit(setupLog, cgroupRoot, opts.goMemLimitRatio); err != nil {
		return err
	}
	if err := setGCPercent(setupLog, opts.gcPercent); err != nil {
		return err
	}

	ownNamespace := operatorNamespace()
	namespaceDefaulted := opts.namespace == ""
	if namespaceDefaulted {
		opts.namespace = ownNamespace
	}
	watched, err := watchedNamespaces(opts.watchNamespaces, opts.namespace, namespaceDefaulted)
	if err != nil {
		return err
	}
	cells := &controllers.CachedCells{}
	mgr, err := newManager(opts, ownNamespace, watched, cells)
	if err != nil {
		return err
	}

	// The connection retries forever in the background, whatever stops it:
	// the operator starts, reports not ready and why, and catches up once
	// NATS lets it in.
	conn, err := natsconn.Connect(&opts.nats, "cellos-operator", ctrl.Log.WithName("nats"))
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := mgr.Add(conn); err != nil {
		return fmt.Errorf("adding the NATS connection: %w", err)
	}
	natsAuth, _ := opts.nats.AuthMode()
	if natsAuth == natsconn.AuthURL {
		setupLog.Info("The NATS URL carries credentials, which anyone who can read the pod's spec sees: pass them in files instead (--nats-password-file, --nats-token-file, --nats-creds)")
	}

	ctx := ctrl.SetupSignalHandler()
	in, err := addProjection(ctx, mgr, conn, opts, ownNamespace, cells)
	if err != nil {
		return err
	}
	if err := addHealthChecks(mgr, conn, in); err != nil {
		return err
	}

	setupLog.Info("Starting manager", "namespace", opts.namespace, "watchNamespaces", slices.Sorted(maps.Keys(watched)), "stream", opts.stream, "createStream", opts.createStream,
		"natsURL", conn.URL(), "natsAuth", natsAuth, "natsTLS", opts.nats.TLS())
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running manager: %w", err)
	}
	return nil
}

// newManager creates the manager, caching the watched namespaces, with
// cells reading its Cells, and, with --leader-elect, fencing its writes.
func newManager(opts options, ownNamespace string, watched map[string]cache.Config, cells *controllers.CachedCells) (ctrl.Manager, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(cellosv1.AddToScheme(scheme))

	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	mgrOpts := ctrl.Options{
		Scheme:                        scheme,
		MapperProvider:                ownKindsMapper,
		Metrics:                       metricsOptions(opts.metricsAddr, opts.metricsSecure, opts.metricsCertDir),
		HealthProbeBindAddress:        opts.probeAddr,
		PprofBindAddress:              opts.pprofAddr,
		LeaderElection:                opts.leaderElect,
		LeaderElectionID:              "cellos-operator.cellos.dev",
		LeaderElectionNamespace:       ownNamespace,
		LeaderElectionReleaseOnCancel: true,
		// The cursor is one ConfigMap: read it directly rather than cache
		// every ConfigMap in the cluster.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.ConfigMap{}}}},
		// The operator never reads managed fields or the last applied
		// configuration that kubectl and GitOps tools leave on Formations.
		// With --watch-namespaces, it caches, and so reconciles, those
		// namespaces' Formations and Cells only.
		Cache: cache.Options{DefaultTransform: slimObjects, DefaultNamespaces: watched, NewInformer: cells.NewInformer},
	}
	if opts.leaderElect {
		mgrOpts.LeaseDuration = ptr.To(opts.lease.duration)
		mgrOpts.RenewDeadline = ptr.To(opts.lease.renewDeadline)
		mgrOpts.RetryPeriod = ptr.To(opts.lease.retryPeriod)
		if err := fenceWrites(cfg, &mgrOpts); err != nil {
			return nil, err
		}
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return nil, fmt.Errorf("creating manager: %w", err)
	}
	return mgr, nil
}

// addProjection adds to mgr what projects the stream: the ingester, the
// tombstones and the controllers, which read the cached Cells through
// cells. It returns the ingester, whose health readiness reports.
func addProjection(ctx context.Context, mgr ctrl.Manager, conn *natsconn.Conn, opts options, ownNamespace string, cells *controllers.CachedCells) (*ingest.Ingester, error) {
	js, err := natsjs.New(conn.NC)
	if err != nil {
		return nil, fmt.Errorf("opening JetStream: %w", err)
	}
	projection := store.New(opts.maxUnflushed, opts.publishSubjectPrefix, opts.maxEventBytes, opts.ttls)
	in := &ingest.Ingester{
		Reader:              mgr.GetAPIReader(),
		JetStream:           js,
		Stream:              opts.stream,
		Cursor:              &cursor.ConfigMap{Client: mgr.GetClient(), Key: types.NamespacedName{Namespace: ownNamespace, Name: opts.cursorConfigMap}},
		Store:               projection,
		Recorder:            mgr.GetEventRecorder("cellos-operator"),
		CommitInterval:      opts.commitInterval,
		NoCreateStream:      !opts.createStream,
		ConsumerBufferBytes: opts.consumerBufferBytes,
		CheckpointInterval:  opts.checkpointInterval,
		Elected:             mgr.Elected(),
	}
	if opts.checkpointInterval > 0 {
		in.Checkpoints = &checkpoint.Bucket{JetStream: js, Name: opts.checkpointBucket, NoCreate: !opts.createStream}
	}
	if err := mgr.Add(in); err != nil {
		return nil, fmt.Errorf("adding the ingester: %w", err)
	}
	tombstones := tombstone.New(js, opts.tombstoneBucket, opts.stream)
	if err := mgr.Add(tombstones); err != nil {
		return nil, fmt.Errorf("adding the tombstones: %w", err)
	}
	err = controllers.Setup(ctx, mgr, controllers.Config{
		Store: projection, Namespace: opts.namespace, FlushWindow: opts.flushWindow, CountWindow: opts.countWindow, Workers: opts.writers, TTLs: opts.ttls,
		Clock: clock.RealClock{}, Recorder: mgr.GetEventRecorder("cellos-operator"),
		Publisher:  &publish.Publisher{JetStream: js, SubjectPrefix: opts.publishSubjectPrefix, Clock: clock.RealClock{}},
		Tombstones: tombstones, Cells: cells,
	})
	if err != nil {
		return nil, err
	}
	return in, nil
}

// addHealthChecks adds the liveness check and the readiness checks, which
// fail while NATS is not connected or the stream is not projected.
func addHealthChecks(mgr ctrl.Manager, conn *natsconn.Conn, in *ingest.Ingester) error {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	readyLog := ctrl.Log.WithName("readyz")
	if err := mgr.AddReadyzCheck("nats", unloggedReadiness("not connected to NATS", conn.Healthy)); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}
	if err := mgr.AddReadyzCheck("projection", withheldReadiness(readyLog, "projection", "not projecting the stream", in.Healthy)); err != nil {
		return fmt.Errorf("adding readiness check: %w", err)
	}
	return nil
}

// fenceWrites makes the manager elect its leader through a fence, and write
// only through it, so that a leader paused past its Lease writes nothing when
// it resumes. The lock is the one controller-runtime would make: a Lease
// named by the options, held by the host name and a UUID, whose changes of
// holder are recorded as Events on it. o holds the lease timings.
func fenceWrites(cfg *rest.Config, o *ctrl.Options) error {
	host, err := os.Hostname()
	if err != nil {
		return err
	}
	identity := host + "_" + string(uuid.NewUUID())
	lockCfg := rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	// One hung request must not use up the whole renew deadline.
	lockCfg.Timeout = *o.RenewDeadline / 2
	cs, err := kubernetes.NewForConfig(lockCfg)
	if err != nil {
		return fmt.Errorf("creating the leader election client: %w", err)
	}
	events := record.NewBroadcaster()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, o.LeaderElectionNamespace, o.LeaderElectionID, cs.CoreV1(), cs.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: identity, EventRecorder: events.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: identity})})
	if err != nil {
		return fmt.Errorf("creating the leader election lock: %w", err)
	}
	f := fence.New(lock, clock.RealClock{})
	o.LeaderElectionResourceLockInterface = f
	o.NewClient = func(cfg *rest.Config, opts client.Options) (client.Client, error) {
		c, err := client.NewWithWatch(cfg, opts)
		if err != nil {
			return nil, err
		}
		return f.Client(c), nil
	}
	return nil
}

// ownKindsMapper answers for the operator's own kinds without the API
// server's discovery, and asks discovery for any other. Setting up the
// controllers needs their mappings; with them known, an operator started
// while the API server is away, as after a lost Lease, starts, serves its
// probes and waits for it, rather than exit into a crash loop.
func ownKindsMapper(cfg *rest.Config, httpClient *http.Client) (meta.RESTMapper, error) {
	discovered, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	own := meta.NewDefaultRESTMapper([]schema.GroupVersion{cellosv1.GroupVersion})
	for _, kind := range []string{"Formation", "Cell"} {
		own.Add(cellosv1.GroupVersion.WithKind(kind), meta.RESTScopeNamespace)
	}
	return ownKinds{RESTMapper: discovered, own: own}, nil
}

type ownKinds struct {
	meta.RESTMapper
	own meta.RESTMapper
}

// RESTMapping answers for Formation and Cell itself; anything else, such as
// the list kinds that a cache of several namespaces asks about, goes to
// discovery.
func (m ownKinds) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	if gk.Group == cellosv1.GroupVersion.Group {
		if mapping, err := m.own.RESTMapping(gk, versions...); err == nil {
			return mapping, nil
		}
	}
	return m.RESTMapper.RESTMapping(gk, versions...)
}

// watchedNamespaces parses --watch-namespaces into the cache's namespaces:
// nil, for all, when it names none. namespace, where objects first seen in
// the stream are created, must be one of them, or the operator could not
// see what it creates there; defaulted says it was not given but is the
// operator's own.
func watchedNamespaces(list, namespace string, defaulted bool) (map[string]cache.Config, error) {
	if strings.TrimSpace(list) == "" {
		return nil, nil
	}
	watched := map[string]cache.Config{}
	for _, ns := range strings.Split(list, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" {
			continue
		}
		if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
			return nil, fmt.Errorf("--watch-namespaces: %q is not a namespace name: %s", ns, strings.Join(errs, "; "))
		}
		watched[ns] = cache.Config{}
	}
	if len(watched) == 0 {
		return nil, fmt.Errorf("--watch-namespaces %q names no namespace; leave it empty to watch all", list)
	}
	if _, ok := watched[namespace]; !ok {
		given := "--namespace"
		if defaulted {
			given = "--namespace (by default the operator's own namespace)"
		}
		return nil, fmt.Errorf("%s %q is not among --watch-namespaces (%s): objects first seen in the stream are created there, "+
			"so the operator must watch it; add it to --watch-namespaces, or set --namespace to one of them",
			given, namespace, strings.Join(slices.Sorted(maps.Keys(watched)), ","))
	}
	return watched, nil
}

// operatorNamespace is the namespace the operator runs in: POD_NAMESPACE, else
// the pod's service account namespace, else default (as when run locally).
func operatorNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile(serviceAccountNamespaceFile); err == nil {
		if ns := strings.TrimSpace(string(b)); ns != "" {
			return ns
		}
	}
	return "default"
}
