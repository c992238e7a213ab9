// Package devicecontroller is cloudhive's controller of KubeEdge's Device and
// DeviceModel custom resources (group devices.kubeedge.io, manifests in
// crds/). It tells each edge node which devices are bound to it (membership)
// and the desired values of their properties (twin/cloud_updated), and writes
// what the node reports (twin/edge_updated, state/update) into the Device's
// status. It reads the API with the dynamic client and dynamic informers and
// reaches the nodes through a nodelink.Sender; it is a nodelink.Handler for
// what the nodes send.
package devicecontroller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/edgehive/edgehive/cloud/nodelink"
	"github.com/edgehive/edgehive/sdk"
)

// The resources the controller works on.
var (
	DeviceGVR      = schema.GroupVersionResource{Group: "devices.kubeedge.io", Version: "v1beta1", Resource: "devices"}
	DeviceModelGVR = schema.GroupVersionResource{Group: "devices.kubeedge.io", Version: "v1beta1", Resource: "devicemodels"}
)

// Config tunes the controller. The zero value is usable.
type Config struct {
	// Namespace limits the controller to one namespace; "" watches all.
	Namespace string
	// ResyncPeriod is how often every Device is compared again with what
	// the nodes were sent (0: DefaultResyncPeriod; negative: never).
	ResyncPeriod time.Duration
	// SendTimeout bounds one Send to a node (0: DefaultSendTimeout).
	SendTimeout time.Duration
	// UpstreamQueue is how many reports from nodes wait for the status
	// writer (0: DefaultUpstreamQueue). When it is full a report is dropped
	// unanswered: the node sends it again.
	UpstreamQueue int
}

// Defaults of Config.
const (
	DefaultResyncPeriod  = 5 * time.Minute
	DefaultSendTimeout   = 10 * time.Second
	DefaultUpstreamQueue = 1024
)

func (c *Config) withDefaults() (Config, error) {
	out := *c
	if out.SendTimeout < 0 || out.UpstreamQueue < 0 {
		return out, errors.New("devicecontroller: SendTimeout and UpstreamQueue must not be negative")
	}
	if out.ResyncPeriod == 0 {
		out.ResyncPeriod = DefaultResyncPeriod
	} else if out.ResyncPeriod < 0 {
		out.ResyncPeriod = 0
	}
	if out.SendTimeout == 0 {
		out.SendTimeout = DefaultSendTimeout
	}
	if out.UpstreamQueue == 0 {
		out.UpstreamQueue = DefaultUpstreamQueue
	}
	return out, nil
}

// Controller is the device controller.
type Controller struct {
	client dynamic.Interface
	sender nodelink.Sender
	logger hclog.Logger
	cfg    Config

	factory dynamicinformer.DynamicSharedInformerFactory
	devices cache.SharedIndexInformer
	models  cache.SharedIndexInformer

	// queue holds "device:<ns>/<name>" and "node:<name>" keys for the one
	// worker that owns sent and unremoved.
	queue workqueue.TypedRateLimitingInterface[string]
	// upstream holds reports from nodes for the status writer.
	upstream chan report

	sent      map[string]*sentDevice     // device key → what its node was sent
	unremoved map[string]map[string]bool // node → device keys whose removal did not reach it

	runOnce sync.Once
}

// sentDevice is what a node was last sent about a device.
type sentDevice struct {
	node    string
	desired map[string]string // property → desired value
}

// report is a message from a node for the status writer.
type report struct {
	node string
	msg  *sdk.Message
}

var _ nodelink.Handler = (*Controller)(nil)

const (
	keyDevice = "device:"
	keyNode   = "node:"
)

// New builds a controller; nothing runs before Run.
func New(client dynamic.Interface, sender nodelink.Sender, logger hclog.Logger, cfg Config) (*Controller, error) {
	if client == nil || sender == nil {
		return nil, errors.New("devicecontroller: a dynamic client and a sender are required")
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(client, c.ResyncPeriod, c.Namespace, nil)
	dc := &Controller{
		client:    client,
		sender:    sender,
		logger:    logger,
		cfg:       c,
		factory:   factory,
		devices:   factory.ForResource(DeviceGVR).Informer(),
		models:    factory.ForResource(DeviceModelGVR).Informer(),
		queue:     workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		upstream:  make(chan report, c.UpstreamQueue),
		sent:      map[string]*sentDevice{},
		unremoved: map[string]map[string]bool{},
	}
	enqueueDevice := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			dc.queue.Add(keyDevice + key)
		}
	}
	if _, err := dc.devices.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueueDevice,
		UpdateFunc: func(_, obj any) { enqueueDevice(obj) },
		DeleteFunc: enqueueDevice,
	}); err != nil {
		return nil, fmt.Errorf("devicecontroller: %w", err)
	}
	modelChanged := func(obj any) { dc.enqueueModelDevices(obj) }
	if _, err := dc.models.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    modelChanged,
		UpdateFunc: func(_, obj any) { modelChanged(obj) },
		DeleteFunc: modelChanged,
	}); err != nil {
		return nil, fmt.Errorf("devicecontroller: %w", err)
	}
	return dc, nil
}

// Run watches the API and works until ctx ends. It returns an error if the
// caches do not fill; call it once.
func (c *Controller) Run(ctx context.Context) error {
	err := errors.New("devicecontroller: Run called twice")
	c.runOnce.Do(func() { err = c.run(ctx) })
	return err
}

func (c *Controller) run(ctx context.Context) error {
	defer c.queue.ShutDown()
	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.devices.HasSynced, c.models.HasSynced) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("devicecontroller: the Device and DeviceModel caches did not sync")
	}
	c.logger.Info("device controller running", "namespace", c.cfg.Namespace)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for c.processNext(ctx) {
		}
	}()
	go func() {
		defer wg.Done()
		c.writeStatuses(ctx)
	}()
	<-ctx.Done()
	c.queue.ShutDown()
	wg.Wait()
	return nil
}

// HandleUpstream takes reports from node: edge_updated and state/update go
// to the status writer; membership/detail (sent by the edge on every
// connect) resyncs the node.
func (c *Controller) HandleUpstream(_ context.Context, node string, msg *sdk.Message) {
	res := msg.Router.Resource
	switch {
	case res == "membership/detail":
		c.queue.Add(keyNode + node)
	case hasSuffix(res, edgeUpdated), hasSuffix(res, stateUpdated):
		select {
		case c.upstream <- report{node: node, msg: msg}:
		default:
			c.logger.Warn("report from a node dropped: the status writer is behind; the node sends it again",
				"node", node, "resource", res, "msg_id", msg.Header.ID)
		}
	default:
		c.logger.Debug("upstream message ignored", "node", node, "operation", msg.Router.Operation, "resource", res)
	}
}

// NodeConnected resyncs the node: every device bound to it is sent again.
func (c *Controller) NodeConnected(_ context.Context, node string) { c.queue.Add(keyNode + node) }

// NodeDisconnected needs nothing: Sends to the node fail until it returns,
// and NodeConnected resyncs it then.
func (c *Controller) NodeDisconnected(node string) {
	c.logger.Debug("node disconnected", "node", node)
}

func hasSuffix(s, suffix string) bool {
	return len(s) > len(suffix) && s[len(s)-len(suffix):] == suffix
}

// enqueueModelDevices queues the devices that use a DeviceModel.
func (c *Controller) enqueueModelDevices(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	m, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	for _, o := range c.devices.GetIndexer().List() {
		d, err := parseDevice(o)
		if err == nil && d.Namespace == m.GetNamespace() && d.Spec.DeviceModelRef != nil && d.Spec.DeviceModelRef.Name == m.GetName() {
			c.queue.Add(keyDevice + d.Namespace + "/" + d.Name)
		}
	}
}

func (c *Controller) processNext(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	var err error
	switch {
	case len(key) > len(keyDevice) && key[:len(keyDevice)] == keyDevice:
		err = c.syncDevice(ctx, key[len(keyDevice):])
	case len(key) > len(keyNode) && key[:len(keyNode)] == keyNode:
		err = c.syncNode(ctx, key[len(keyNode):])
	}
	if err != nil && ctx.Err() == nil {
		c.logger.Warn("sync failed; retrying", "key", key, "error", err)
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

// send sends to node with the configured timeout.
func (c *Controller) send(ctx context.Context, node string, msg *sdk.Message) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.SendTimeout)
	defer cancel()
	return c.sender.Send(ctx, node, msg)
}

// parse turns an informer object into a device.
func parseDevice(obj any) (*device, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	var d device
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &d); err != nil {
		return nil, fmt.Errorf("device %s/%s: %w", u.GetNamespace(), u.GetName(), err)
	}
	return &d, nil
}
