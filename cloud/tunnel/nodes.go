package tunnel

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// nodeAddressTypes are the Node addresses kept: the IP ones, which the API
// server puts in a CONNECT when it prefers InternalIP or ExternalIP.
var nodeAddressTypes = map[v1.NodeAddressType]bool{v1.NodeInternalIP: true, v1.NodeExternalIP: true}

// WatchNodeAddresses keeps the address map (SetNodeAddresses) in step with
// the Node objects until ctx ends. The informer's cache keeps only each
// node's name and IP addresses.
func (s *Server) WatchNodeAddresses(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithTransform(slimNode))
	inf := factory.Core().V1().Nodes().Informer()
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.nodeChanged(obj) },
		UpdateFunc: func(_, obj any) { s.nodeChanged(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*v1.Node); ok {
				s.SetNodeAddresses(n.Name, nil)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("tunnel: node informer: %w", err)
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	synced := cache.WaitForCacheSync(sctx.Done(), inf.HasSynced)
	cancel()
	if !synced && ctx.Err() == nil {
		s.logger.Warn("node addresses not synced within a minute; CONNECTs by IP address may be refused until they are")
	}
	<-ctx.Done()
	return nil
}

func (s *Server) nodeChanged(obj any) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return
	}
	var addrs []string
	for _, a := range n.Status.Addresses {
		if nodeAddressTypes[a.Type] {
			addrs = append(addrs, a.Address)
		}
	}
	s.SetNodeAddresses(n.Name, addrs)
}

// slimNode drops everything but the name and IP addresses before the
// informer caches a node.
func slimNode(obj any) (any, error) {
	n, ok := obj.(*v1.Node)
	if !ok {
		return obj, nil
	}
	slim := &v1.Node{}
	slim.Name, slim.ResourceVersion, slim.UID = n.Name, n.ResourceVersion, n.UID
	for _, a := range n.Status.Addresses {
		if nodeAddressTypes[a.Type] {
			slim.Status.Addresses = append(slim.Status.Addresses, a)
		}
	}
	return slim, nil
}
