package tunnel

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordinationlisters "k8s.io/client-go/listers/coordination/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/edgehive/edgehive/internal/nodename"
)

// Names and labels of the Leases that say which replica holds which node's
// session (see README.md, "Several replicas").
const (
	// NodeLeasePrefix + node name is a node's session Lease; its holder is
	// the replica with the session.
	NodeLeasePrefix = "tunnel-"
	// ReplicaLeasePrefix + replica id is a replica's own Lease, renewed
	// while it runs: a node Lease counts only while its holder's is fresh.
	ReplicaLeasePrefix = "cloudhive-tunnel-replica-"
	// LabelRole marks the tunnel's Leases: "node" or "replica".
	LabelRole = "tunnel.edgehive.io/role"
	// AnnotationPeer is the holder replica's peer endpoint, host:port.
	AnnotationPeer = "tunnel.edgehive.io/peer-address"
	// AnnotationNode is the node a node Lease is for (its name may be a
	// hash when the node's name is too long for a Lease name).
	AnnotationNode = "tunnel.edgehive.io/node"

	roleNode    = "node"
	roleReplica = "replica"

	// DefaultReplicaLeaseDuration: a replica that stopped renewing for this
	// long no longer holds any node.
	DefaultReplicaLeaseDuration = 30 * time.Second
	defaultRetryInterval        = time.Second
	// cleanupTimeout bounds releasing the Leases when the replica stops.
	cleanupTimeout = 3 * time.Second
	maxObjectName  = 253
)

// ReplicaConfig describes this replica to the others.
type ReplicaConfig struct {
	// Identity is this replica's id, unique among the running replicas
	// (NewReplicaID); it is each Lease's holderIdentity.
	Identity string
	// PeerAddress is where the other replicas reach this one's peer
	// endpoint (host:port, covered by the server certificate).
	PeerAddress string
	// Namespace holds the Leases (cloudhive's, "kubeedge").
	Namespace string
	Client    kubernetes.Interface
	// LeaseDuration of the replica Lease, renewed every third of it;
	// DefaultReplicaLeaseDuration when zero.
	LeaseDuration time.Duration
	// RetryInterval after a failed Lease write; one second when zero.
	RetryInterval time.Duration
}

// Replicas publishes which node sessions this replica holds and finds the
// replica that holds another node's. One goroutine (Run) does every Lease
// write; sessions coming and going only mark their node for it.
type Replicas struct {
	cfg    ReplicaConfig
	logger hclog.Logger
	leases coordinationlisters.LeaseLister
	start  func(stop <-chan struct{})
	stop   func()
	synced cache.InformerSynced

	mu       sync.Mutex
	sessions sessionView       // under mu: set once by Server.UseReplicas
	dirty    map[string]intent // under mu: nodes to reconcile; one entry per node, so it is bounded by the node count
	kick     chan struct{}     // capacity 1: "dirty has entries"
}

// sessionView is what Replicas asks the tunnel server.
type sessionView interface {
	Connected(node string) bool
	nodes() []string
}

// intent is why a node is reconciled.
type intent int

const (
	// intentCheck: make the Lease match the session: keep or create it while
	// the session is here (never taking it from a live holder), release it
	// (only if ours) when the session is gone.
	intentCheck intent = iota
	// intentClaim: a session just came up here; it is the newest, so take
	// the Lease whoever holds it.
	intentClaim
)

// NewReplicaID is a replica id: the host name (as a DNS label) and a random
// suffix, so a restarted replica never reuses a dead one's Leases.
func NewReplicaID() string {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, c := range strings.ToLower(host) {
		if b.Len() >= 40 {
			break
		}
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	name := strings.Trim(b.String(), "-")
	if name == "" {
		name = "cloudhive"
	}
	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	return name + "-" + hex.EncodeToString(suffix)
}

// NodeLeaseName is the Lease that names node's holder: tunnel-<node>, or
// tunnel-h-<hash> when that would be too long for an object name (the
// AnnotationNode annotation keeps the name, and lookups check it).
func NodeLeaseName(node string) string {
	if len(NodeLeasePrefix)+len(node) <= maxObjectName {
		return NodeLeasePrefix + node
	}
	sum := sha256.Sum256([]byte(node))
	return NodeLeasePrefix + "h-" + hex.EncodeToString(sum[:20])
}

func replicaLeaseName(id string) string { return ReplicaLeasePrefix + id }

// Validate reports every bad value.
func (c ReplicaConfig) Validate() error {
	var errs []error
	if c.Identity == "" || !nodename.Valid(c.Identity) || len(ReplicaLeasePrefix)+len(c.Identity) > maxObjectName {
		errs = append(errs, fmt.Errorf("replica identity %q is not a lowercase DNS name", c.Identity))
	}
	if c.PeerAddress == "" {
		errs = append(errs, errors.New("no peer address"))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("no namespace"))
	}
	if c.Client == nil {
		errs = append(errs, errors.New("no Kubernetes client"))
	}
	if c.LeaseDuration < 0 || (c.LeaseDuration > 0 && c.LeaseDuration < 3*time.Second) {
		errs = append(errs, fmt.Errorf("lease duration %v is shorter than 3s", c.LeaseDuration))
	}
	return errors.Join(errs...)
}

// NewReplicas prepares the Lease informer; Run starts it.
func NewReplicas(cfg ReplicaConfig, logger hclog.Logger) (*Replicas, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("tunnel replicas: %w", err)
	}
	if cfg.LeaseDuration == 0 {
		cfg.LeaseDuration = DefaultReplicaLeaseDuration
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = defaultRetryInterval
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cfg.Client, 0, informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = LabelRole }))
	leases := factory.Coordination().V1().Leases()
	r := &Replicas{cfg: cfg, logger: logger, leases: leases.Lister(), synced: leases.Informer().HasSynced,
		start: factory.Start, stop: factory.Shutdown,
		dirty: map[string]intent{}, kick: make(chan struct{}, 1)}
	return r, nil
}

// Identity is this replica's id.
func (r *Replicas) Identity() string { return r.cfg.Identity }

// mark queues node for the Lease writer; a claim is never weakened to a
// check.
func (r *Replicas) mark(node string, why intent) {
	r.mu.Lock()
	if prev, ok := r.dirty[node]; !ok || why > prev {
		r.dirty[node] = why
	}
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Replicas) takeDirty() map[string]intent {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.dirty
	r.dirty = map[string]intent{}
	return d
}

func (r *Replicas) view() sessionView {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sessions
}

// Run keeps this replica's Lease fresh and the node Leases in step with the
// sessions until ctx ends; then it releases every Lease it holds.
func (r *Replicas) Run(ctx context.Context) error {
	sessions := r.view()
	if sessions == nil {
		return errors.New("tunnel replicas: not attached to a server (Server.UseReplicas)")
	}
	r.start(ctx.Done())
	defer r.stop()
	claimed := map[string]bool{} // node Leases this replica wrote; owned here
	defer r.cleanup(claimed)

	if err := r.renewReplica(ctx); err != nil && ctx.Err() == nil {
		r.logger.Warn("replica lease not written; retrying", "error", err)
	}
	renew := time.NewTicker(r.cfg.LeaseDuration / 3)
	defer renew.Stop()
	// Now and then every session and every claim is checked again: a Lease
	// someone deleted comes back, one left by a lost write goes.
	resync := time.NewTicker(r.cfg.LeaseDuration)
	defer resync.Stop()
	retry := time.NewTimer(0)
	<-retry.C
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-renew.C:
			if err := r.renewReplica(ctx); err != nil && ctx.Err() == nil {
				r.logger.Warn("replica lease renewal failed", "error", err)
			}
			continue
		case <-resync.C:
			for _, n := range sessions.nodes() {
				r.mark(n, intentCheck)
			}
			for n := range claimed {
				r.mark(n, intentCheck)
			}
			continue
		case <-r.kick:
		case <-retry.C:
		}
		failed := false
		for node, why := range r.takeDirty() {
			if err := r.reconcile(ctx, node, why, sessions.Connected(node), claimed); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				r.logger.Warn("node lease write failed; retrying", "node", node, "error", err)
				r.mu.Lock()
				if _, ok := r.dirty[node]; !ok {
					r.dirty[node] = why
				}
				r.mu.Unlock()
				failed = true
			}
		}
		if failed {
			retry.Reset(r.cfg.RetryInterval)
		}
	}
}

// reconcile makes node's Lease say what this replica knows about it.
func (r *Replicas) reconcile(ctx context.Context, node string, why intent, local bool, claimed map[string]bool) error {
	api := r.cfg.Client.CoordinationV1().Leases(r.cfg.Namespace)
	name := NodeLeaseName(node)
	lease, err := api.Get(ctx, name, metav1.GetOptions{})
	found := err == nil
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("get lease %s: %w", name, err)
	}
	holder := ""
	if found && lease.Spec.HolderIdentity != nil {
		holder = *lease.Spec.HolderIdentity
	}
	ours := found && holder == r.cfg.Identity && lease.Annotations[AnnotationNode] == node
	if !local {
		delete(claimed, node)
		if !ours {
			return nil
		}
		rv := lease.ResourceVersion
		err := api.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("release lease %s: %w", name, err)
		}
		r.logger.Debug("node lease released", "node", node)
		return nil
	}
	now := metav1.NewMicroTime(time.Now())
	switch {
	case !found:
		_, err = api.Create(ctx, r.nodeLease(node, name, now, 0), metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("create lease %s: %w", name, err)
		}
	case ours && lease.Annotations[AnnotationPeer] == r.cfg.PeerAddress && why == intentCheck:
		// Nothing to change.
	case !ours && why == intentCheck && r.alive(holder, time.Now()):
		// Another live replica took it since: its session is the newer.
		delete(claimed, node)
		return nil
	default:
		transitions := int32(0)
		if lease.Spec.LeaseTransitions != nil {
			transitions = *lease.Spec.LeaseTransitions
		}
		if !ours {
			transitions++
		}
		want := r.nodeLease(node, name, now, transitions)
		want.ResourceVersion = lease.ResourceVersion
		if ours && lease.Spec.AcquireTime != nil {
			want.Spec.AcquireTime = lease.Spec.AcquireTime
		}
		if _, err := api.Update(ctx, want, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("take lease %s: %w", name, err)
		}
	}
	if !claimed[node] {
		r.logger.Debug("node lease held", "node", node)
	}
	claimed[node] = true
	return nil
}

func (r *Replicas) nodeLease(node, name string, now metav1.MicroTime, transitions int32) *coordinationv1.Lease {
	id := r.cfg.Identity
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.cfg.Namespace,
			Labels:      map[string]string{LabelRole: roleNode},
			Annotations: map[string]string{AnnotationNode: node, AnnotationPeer: r.cfg.PeerAddress}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, AcquireTime: &now, RenewTime: &now, LeaseTransitions: &transitions},
	}
}

// renewReplica writes this replica's Lease with a fresh renewTime.
func (r *Replicas) renewReplica(ctx context.Context) error {
	api := r.cfg.Client.CoordinationV1().Leases(r.cfg.Namespace)
	name := replicaLeaseName(r.cfg.Identity)
	id := r.cfg.Identity
	secs := int32(r.cfg.LeaseDuration / time.Second)
	now := metav1.NewMicroTime(time.Now())
	want := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.cfg.Namespace,
			Labels:      map[string]string{LabelRole: roleReplica},
			Annotations: map[string]string{AnnotationPeer: r.cfg.PeerAddress}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &secs, AcquireTime: &now, RenewTime: &now},
	}
	cur, err := api.Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = api.Create(ctx, want, metav1.CreateOptions{})
	case err == nil:
		want.ResourceVersion = cur.ResourceVersion
		want.Spec.AcquireTime = cur.Spec.AcquireTime
		_, err = api.Update(ctx, want, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("replica lease %s: %w", name, err)
	}
	return nil
}

// cleanup releases this replica's node Leases and its own Lease, so the
// other replicas answer 503 at once instead of forwarding to a replica that
// is gone; if it fails, the replica Lease expires instead.
func (r *Replicas) cleanup(claimed map[string]bool) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for node := range claimed {
		if err := r.reconcile(ctx, node, intentCheck, false, claimed); err != nil {
			r.logger.Debug("node lease not released at shutdown", "node", node, "error", err)
		}
	}
	err := r.cfg.Client.CoordinationV1().Leases(r.cfg.Namespace).Delete(ctx, replicaLeaseName(r.cfg.Identity), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		r.logger.Debug("replica lease not released at shutdown", "error", err)
	}
}

// holder is what the Leases say about a node's session elsewhere.
type holder struct {
	// Identity is the replica the node Lease names ("" when there is none).
	Identity string
	// PeerAddress is that replica's peer endpoint.
	PeerAddress string
	// Alive: the replica's own Lease is fresh.
	Alive bool
}

// lookup reads node's holder from the informer's cache.
func (r *Replicas) lookup(node string, now time.Time) holder {
	lease, err := r.leases.Leases(r.cfg.Namespace).Get(NodeLeaseName(node))
	if err != nil || lease.Spec.HolderIdentity == nil || lease.Annotations[AnnotationNode] != node {
		return holder{}
	}
	h := holder{Identity: *lease.Spec.HolderIdentity}
	rl, err := r.leases.Leases(r.cfg.Namespace).Get(replicaLeaseName(h.Identity))
	if err != nil {
		return h
	}
	// The replica Lease's address is the current one; the node Lease's is
	// the one it had when it took the node.
	h.PeerAddress = rl.Annotations[AnnotationPeer]
	h.Alive = leaseFresh(rl, now)
	return h
}

// alive: replica id's Lease is fresh.
func (r *Replicas) alive(id string, now time.Time) bool {
	rl, err := r.leases.Leases(r.cfg.Namespace).Get(replicaLeaseName(id))
	return err == nil && leaseFresh(rl, now)
}

func leaseFresh(l *coordinationv1.Lease, now time.Time) bool {
	if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil {
		return false
	}
	return now.Before(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// route is where a CONNECT for a node goes.
type route int

const (
	routeLocal   route = iota // this replica holds the session
	routeForward              // to the holder's peer endpoint
	routeRefuse               // 503
)

// decideRoute picks the route for a CONNECT to a known node: local when the
// session is here; else forward to a live holder, unless the request was
// itself forwarded (it is never forwarded twice) or the Leases name this
// replica (stale: it has no session).
func decideRoute(local, forwarded bool, replicasOn bool, h holder, self string) (route, string) {
	switch {
	case local:
		return routeLocal, ""
	case forwarded:
		return routeRefuse, "no tunnel session on this replica (a forwarded CONNECT is never forwarded again)"
	case !replicasOn:
		return routeRefuse, "no tunnel session"
	case h.Identity == "":
		return routeRefuse, "no replica holds a tunnel session"
	case h.Identity == self:
		return routeRefuse, "no tunnel session (the lease naming this replica is stale)"
	case !h.Alive:
		return routeRefuse, fmt.Sprintf("the replica holding its session (%s) is not live", h.Identity)
	case h.PeerAddress == "":
		return routeRefuse, fmt.Sprintf("the replica holding its session (%s) has no peer address", h.Identity)
	}
	return routeForward, ""
}
