package tunnel

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// podIPIndex is the pod informer's index from a pod address to its pods.
const podIPIndex = "podIP"

// podLookup finds the node of the pod that has an address.
type podLookup interface {
	// nodeOfPod is the node running the pod with address ip; ok is false
	// when no pod has it, or pods on different nodes claim it.
	nodeOfPod(ip netip.Addr) (node string, ok bool)
}

// podIndex is podLookup over the pod informer's indexer (which does its own
// locking; the informer's goroutine is its only writer).
type podIndex struct{ indexer cache.Indexer }

var _ podLookup = podIndex{}

func (p podIndex) nodeOfPod(ip netip.Addr) (string, bool) {
	objs, err := p.indexer.ByIndex(podIPIndex, ip.Unmap().String())
	if err != nil || len(objs) == 0 {
		return "", false
	}
	node := ""
	for _, o := range objs {
		pod, ok := o.(*v1.Pod)
		if !ok {
			continue
		}
		if node != "" && pod.Spec.NodeName != node {
			return "", false // two nodes claim the address: neither gets it
		}
		node = pod.Spec.NodeName
	}
	return node, node != ""
}

// WatchPods lets CONNECTs name pod addresses (status.podIPs) until ctx
// ends: the API server dials a pod's address for pods/<p>/proxy and
// services/<s>/proxy, and such a CONNECT goes to the pod's node through its
// session. The informer lists only pods bound to a node, caches only what
// routing needs, and indexes them by address.
func (s *Server) WatchPods(ctx context.Context, client kubernetes.Interface) error {
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName!=" }),
		informers.WithTransform(slimPod))
	inf := factory.Core().V1().Pods().Informer()
	if err := inf.AddIndexers(cache.Indexers{podIPIndex: podAddresses}); err != nil {
		return fmt.Errorf("tunnel: pod informer: %w", err)
	}
	s.mu.Lock()
	s.pods = podIndex{indexer: inf.GetIndexer()}
	s.mu.Unlock()
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	synced := cache.WaitForCacheSync(sctx.Done(), inf.HasSynced)
	cancel()
	if !synced && ctx.Err() == nil {
		s.logger.Warn("pods not synced within a minute; CONNECTs to pod addresses may be refused until they are")
	}
	<-ctx.Done()
	return nil
}

// podAddresses indexes a pod by its addresses when the tunnel may route to
// it: bound to a node, not on the host's network (its address would be
// the node's, and the tunnel never reaches host services by pod), and not
// finished (a finished pod's address is free for the next one).
func podAddresses(obj any) ([]string, error) {
	pod, ok := obj.(*v1.Pod)
	if !ok || pod.Spec.NodeName == "" || pod.Spec.HostNetwork ||
		pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed {
		return nil, nil
	}
	var out []string
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, ip.Unmap().String())
		}
	}
	for _, a := range pod.Status.PodIPs {
		add(a.IP)
	}
	if len(pod.Status.PodIPs) == 0 && pod.Status.PodIP != "" {
		add(pod.Status.PodIP)
	}
	return out, nil
}

// slimPod drops everything but what routing needs before the informer
// caches a pod.
func slimPod(obj any) (any, error) {
	p, ok := obj.(*v1.Pod)
	if !ok {
		return obj, nil
	}
	slim := &v1.Pod{}
	slim.Name, slim.Namespace, slim.ResourceVersion, slim.UID = p.Name, p.Namespace, p.ResourceVersion, p.UID
	slim.Spec.NodeName, slim.Spec.HostNetwork = p.Spec.NodeName, p.Spec.HostNetwork
	slim.Status.Phase, slim.Status.PodIP, slim.Status.PodIPs = p.Status.Phase, p.Status.PodIP, p.Status.PodIPs
	return slim, nil
}
