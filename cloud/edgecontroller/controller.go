// Package edgecontroller is cloudhive's half of KubeEdge's edgecontroller:
// downstream it sends the API objects an edge node needs (its pods, the
// configMaps and secrets they use, services and endpoints, its Node) to the
// node through a nodelink.Sender; upstream it applies what nodes send
// (registration, node and pod status, leases, pod deletes, events) to the API
// and answers their queries from informer caches.
//
// It keeps no state of its own: what a node should have is recomputed from
// the API whenever the node connects (NodeConnected), so several cloudhive
// replicas can share the nodes.
package edgecontroller

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"

	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/sdk"
)

// ModuleName is the route source of everything the controller sends, as in
// KubeEdge; the edge dispatches answers by group "resource" and parent id.
const ModuleName = "edgecontroller"

// Pod indexes.
const (
	indexByNode      = "node"
	indexByConfigMap = "configmap" // "<ns>/<name>" of each configMap a pod uses
	indexBySecret    = "secret"
)

// Controller is the edgecontroller. Create it with New, then Run it; it is a
// nodelink.Handler for cloudhub.
type Controller struct {
	client kubernetes.Interface
	sender nodelink.Sender
	log    hclog.Logger
	cfg    settings

	podFactory  informers.SharedInformerFactory
	nodeFactory informers.SharedInformerFactory
	factory     informers.SharedInformerFactory

	pods       cache.SharedIndexInformer
	podLister  corelisters.PodLister
	nodeLister corelisters.NodeLister
	cmLister   corelisters.ConfigMapLister
	secLister  corelisters.SecretLister
	svcLister  corelisters.ServiceLister
	epLister   corelisters.EndpointsLister
	synced     []cache.InformerSynced

	// queue holds downstream work; its workers own all sends.
	queue workqueue.TypedRateLimitingInterface[item]
	// upstream holds one bounded queue per upstream worker; a node's
	// messages always hash to the same one, so they are applied in order.
	upstream []chan upstreamReq
	events   flowcontrol.RateLimiter

	running atomic.Bool
	dropped atomic.Int64 // upstream messages dropped on a full queue
	panics  atomic.Int64 // upstream handler panics recovered (a bug if ever > 0)
}

var _ nodelink.Handler = (*Controller)(nil)

type upstreamReq struct {
	node string
	msg  *sdk.Message
}

// New builds the controller and registers its informers; nothing starts
// before Run.
func New(client kubernetes.Interface, sender nodelink.Sender, logger hclog.Logger, cfg Config) (*Controller, error) {
	if client == nil || sender == nil {
		return nil, errors.New("edgecontroller: a Kubernetes client and a nodelink.Sender are required")
	}
	s, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c := &Controller{
		client: client,
		sender: sender,
		log:    logger.Named("edgecontroller"),
		cfg:    s,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[item](),
			workqueue.TypedRateLimitingQueueConfig[item]{Name: "edgecontroller"}),
		events: flowcontrol.NewTokenBucketRateLimiter(float32(s.EventQPS), s.EventBurst),
	}
	per := s.UpstreamQueue / s.UpstreamWorkers
	for range s.UpstreamWorkers {
		c.upstream = append(c.upstream, make(chan upstreamReq, per))
	}

	// Unscheduled pods never concern a node; leave them out of the cache.
	c.podFactory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName!=" }))
	c.nodeFactory = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = s.EdgeNodeLabel }))
	c.factory = informers.NewSharedInformerFactory(client, 0)

	podInf := c.podFactory.Core().V1().Pods()
	c.pods = podInf.Informer()
	if err := c.pods.AddIndexers(cache.Indexers{
		indexByNode:      indexPodByNode,
		indexByConfigMap: indexPodByConfigMap,
		indexBySecret:    indexPodBySecret,
	}); err != nil {
		return nil, fmt.Errorf("edgecontroller: pod indexes: %w", err)
	}
	c.podLister = podInf.Lister()
	nodeInf := c.nodeFactory.Core().V1().Nodes()
	c.nodeLister = nodeInf.Lister()
	cmInf := c.factory.Core().V1().ConfigMaps()
	c.cmLister = cmInf.Lister()
	secInf := c.factory.Core().V1().Secrets()
	c.secLister = secInf.Lister()

	register := func(inf cache.SharedIndexInformer, h cache.ResourceEventHandler) error {
		// managedFields are server bookkeeping nobody here reads; they are
		// often the bulk of an object.
		if err := inf.SetTransform(dropManagedFields); err != nil {
			return fmt.Errorf("edgecontroller: informer transform: %w", err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return fmt.Errorf("edgecontroller: event handler: %w", err)
		}
		c.synced = append(c.synced, inf.HasSynced)
		return nil
	}
	if err := register(c.pods, c.podHandler()); err != nil {
		return nil, err
	}
	if err := register(nodeInf.Informer(), c.nodeHandler()); err != nil {
		return nil, err
	}
	if err := register(cmInf.Informer(), c.fanOutHandler(sdk.ResourceConfigMap, indexByConfigMap)); err != nil {
		return nil, err
	}
	if err := register(secInf.Informer(), c.fanOutHandler(sdk.ResourceSecret, indexBySecret)); err != nil {
		return nil, err
	}
	if *s.SyncServices {
		svcInf := c.factory.Core().V1().Services()
		c.svcLister = svcInf.Lister()
		//nolint:staticcheck // the edge's MetaServer serves v1 Endpoints, as KubeEdge's does
		epInf := c.factory.Core().V1().Endpoints()
		c.epLister = epInf.Lister()
		if err := register(svcInf.Informer(), c.broadcastHandler(sdk.ResourceService)); err != nil {
			return nil, err
		}
		if err := register(epInf.Informer(), c.broadcastHandler(sdk.ResourceEndpoints)); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Run starts the informers, waits for their caches, then runs the workers
// until ctx ends. Messages that arrive before the caches are synced wait in
// their queues.
func (c *Controller) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("edgecontroller: Run called twice")
	}
	defer c.queue.ShutDown()
	c.podFactory.Start(ctx.Done())
	c.nodeFactory.Start(ctx.Done())
	c.factory.Start(ctx.Done())
	defer func() {
		c.podFactory.Shutdown()
		c.nodeFactory.Shutdown()
		c.factory.Shutdown()
	}()
	c.log.Info("waiting for informer caches")
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		if ctx.Err() != nil {
			return nil // stopped before the caches synced: a clean stop
		}
		return fmt.Errorf("edgecontroller: informer caches did not sync: %w", context.Cause(ctx))
	}
	c.log.Info("caches synced; running", "downstream_workers", c.cfg.DownstreamWorkers, "upstream_workers", c.cfg.UpstreamWorkers)

	done := make(chan struct{})
	workers := 0
	for range c.cfg.DownstreamWorkers {
		workers++
		go func() {
			defer func() { done <- struct{}{} }()
			for c.processDownstream(ctx) {
			}
		}()
	}
	for i := range c.upstream {
		workers++
		go func() {
			defer func() { done <- struct{}{} }()
			c.upstreamWorker(ctx, c.upstream[i])
		}()
	}
	<-ctx.Done()
	c.queue.ShutDown() // wakes the downstream workers
	for range workers {
		<-done
	}
	return nil
}

// HandleUpstream implements nodelink.Handler. It only queues: the work is
// done on the node's upstream worker. A full queue drops the message (logged);
// the edge asks again when its own timeout expires.
func (c *Controller) HandleUpstream(_ context.Context, node string, msg *sdk.Message) {
	if msg == nil {
		return
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(node))
	q := c.upstream[h.Sum32()%uint32(len(c.upstream))]
	select {
	case q <- upstreamReq{node: node, msg: msg}:
	default:
		n := c.dropped.Add(1)
		c.log.Warn("upstream queue full; message dropped", "node", node, "msg", msg.String(), "dropped_total", n)
	}
}

// NodeConnected implements nodelink.Handler: the node is brought up to date
// with the API (its Node, pods, the configMaps and secrets they use, services
// and endpoints). The work is queued; it runs once the caches are synced.
func (c *Controller) NodeConnected(_ context.Context, node string) {
	c.log.Debug("node connected; resync queued", "node", node)
	c.queue.Add(item{kind: kindResync, node: node})
}

// NodeDisconnected implements nodelink.Handler. Nothing is kept per node, so
// there is nothing to drop; queued sends to it fail with ErrNotConnected and
// are forgotten.
func (c *Controller) NodeDisconnected(node string) {
	c.log.Debug("node disconnected", "node", node)
}

func (c *Controller) upstreamWorker(ctx context.Context, q <-chan upstreamReq) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-q:
			c.handleUpstream(ctx, r.node, r.msg)
		}
	}
}

// isEdgeNode reports whether name is a Node carrying the edge label.
func (c *Controller) isEdgeNode(name string) bool {
	if name == "" {
		return false
	}
	_, err := c.nodeLister.Get(name)
	return err == nil
}

func indexPodByNode(obj any) ([]string, error) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{pod.Spec.NodeName}, nil
}

func indexPodByConfigMap(obj any) ([]string, error) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return nil, nil
	}
	cms, _ := podRefs(pod)
	return nsKeys(pod.Namespace, cms), nil
}

func indexPodBySecret(obj any) ([]string, error) {
	pod, ok := obj.(*v1.Pod)
	if !ok {
		return nil, nil
	}
	_, secrets := podRefs(pod)
	return nsKeys(pod.Namespace, secrets), nil
}

func nsKeys(ns string, names []string) []string {
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = ns + "/" + n
	}
	return keys
}

// nodesUsing returns the edge nodes running a pod that uses the object
// "<ns>/<name>" through index (configmap or secret).
func (c *Controller) nodesUsing(index, ns, name string) []string {
	objs, err := c.pods.GetIndexer().ByIndex(index, ns+"/"+name)
	if err != nil {
		c.log.Error("pod index lookup failed", "index", index, "key", ns+"/"+name, "error", err)
		return nil
	}
	seen := map[string]bool{}
	var nodes []string
	for _, o := range objs {
		pod, ok := o.(*v1.Pod)
		if !ok || seen[pod.Spec.NodeName] || !c.isEdgeNode(pod.Spec.NodeName) {
			continue
		}
		seen[pod.Spec.NodeName] = true
		nodes = append(nodes, pod.Spec.NodeName)
	}
	return nodes
}

// nodeUses reports whether a pod bound to node uses "<ns>/<name>" through index.
func (c *Controller) nodeUses(node, index, ns, name string) bool {
	objs, err := c.pods.GetIndexer().ByIndex(index, ns+"/"+name)
	if err != nil {
		return false
	}
	for _, o := range objs {
		if pod, ok := o.(*v1.Pod); ok && pod.Spec.NodeName == node {
			return true
		}
	}
	return false
}

// podsOn returns the cached pods bound to node.
func (c *Controller) podsOn(node string) []*v1.Pod {
	objs, err := c.pods.GetIndexer().ByIndex(indexByNode, node)
	if err != nil {
		c.log.Error("pod index lookup failed", "index", indexByNode, "node", node, "error", err)
		return nil
	}
	pods := make([]*v1.Pod, 0, len(objs))
	for _, o := range objs {
		if pod, ok := o.(*v1.Pod); ok {
			pods = append(pods, pod)
		}
	}
	return pods
}

func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}
