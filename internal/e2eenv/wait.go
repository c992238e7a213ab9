//go:build e2e

package e2eenv

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// Condition is a state a watched object is waited for. exists is false when
// the object is absent (never created or deleted); obj is then the last
// known state or nil.
type Condition[T runtime.Object] func(obj T, exists bool) (bool, error)

// WaitFor watches one object (a list+watch filtered to its name, re-listing
// after a broken watch) until cond holds or ctx ends. It returns the object
// as last seen, also on error, so a failure can say what state it was in.
func WaitFor[T runtime.Object](ctx context.Context, lw cache.ListerWatcher, example T, cond Condition[T]) (T, error) {
	var last T
	pre := func(store cache.Store) (bool, error) {
		items := store.List()
		if len(items) == 0 {
			return cond(last, false)
		}
		last = items[0].(T)
		return cond(last, true)
	}
	_, err := watchtools.UntilWithSync(ctx, lw, example, pre, func(e watch.Event) (bool, error) {
		o, ok := e.Object.(T)
		if !ok {
			return false, nil // a bookmark or an error status
		}
		last = o
		return cond(o, e.Type != watch.Deleted)
	})
	return last, err
}

func byName(name string) func(*metav1.ListOptions) {
	return func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}
}

// PodListWatch lists and watches the one pod ns/name.
func PodListWatch(client kubernetes.Interface, ns, name string) *cache.ListWatch {
	sel := byName(name)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			sel(&o)
			return client.CoreV1().Pods(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			sel(&o)
			return client.CoreV1().Pods(ns).Watch(ctx, o)
		},
	}
}

// NodeListWatch lists and watches the one node name.
func NodeListWatch(client kubernetes.Interface, name string) *cache.ListWatch {
	sel := byName(name)
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			sel(&o)
			return client.CoreV1().Nodes().List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			sel(&o)
			return client.CoreV1().Nodes().Watch(ctx, o)
		},
	}
}

// WaitForPod waits until cond holds for pod ns/name.
func WaitForPod(ctx context.Context, client kubernetes.Interface, ns, name string, cond Condition[*v1.Pod]) (*v1.Pod, error) {
	p, err := WaitFor(ctx, PodListWatch(client, ns, name), &v1.Pod{}, cond)
	if err != nil {
		return p, fmt.Errorf("pod %s/%s: %w (last seen: %s)", ns, name, err, DescribePod(p))
	}
	return p, nil
}

// WaitForNode waits until cond holds for node name.
func WaitForNode(ctx context.Context, client kubernetes.Interface, name string, cond Condition[*v1.Node]) (*v1.Node, error) {
	n, err := WaitFor(ctx, NodeListWatch(client, name), &v1.Node{}, cond)
	if err != nil {
		return n, fmt.Errorf("node %s: %w (last seen: %s)", name, err, DescribeNode(n))
	}
	return n, nil
}

// PodRunning holds when the pod is Running with an IP and every container
// running and ready-reported.
func PodRunning(p *v1.Pod, exists bool) (bool, error) {
	if !exists || p == nil {
		return false, nil
	}
	if p.Status.Phase == v1.PodFailed || p.Status.Phase == v1.PodSucceeded {
		return false, fmt.Errorf("pod %s/%s ended in phase %s", p.Namespace, p.Name, p.Status.Phase)
	}
	if p.Status.Phase != v1.PodRunning || p.Status.PodIP == "" {
		return false, nil
	}
	if len(p.Status.ContainerStatuses) != len(p.Spec.Containers) {
		return false, nil
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.State.Running == nil || cs.ContainerID == "" {
			return false, nil
		}
	}
	return true, nil
}

// PodGone holds once the pod no longer exists.
func PodGone(_ *v1.Pod, exists bool) (bool, error) { return !exists, nil }

// NodeReady holds when the node's Ready condition is True.
func NodeReady(n *v1.Node, exists bool) (bool, error) {
	return exists && n != nil && IsNodeReady(n), nil
}

// NodeExists holds once the node is registered.
func NodeExists(_ *v1.Node, exists bool) (bool, error) { return exists, nil }

// IsNodeReady reports the node's Ready condition.
func IsNodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// DescribePod is a one-line summary for failure messages.
func DescribePod(p *v1.Pod) string {
	if p == nil {
		return "absent"
	}
	s := fmt.Sprintf("node=%q phase=%s ip=%q", p.Spec.NodeName, p.Status.Phase, p.Status.PodIP)
	for _, cs := range p.Status.ContainerStatuses {
		state := "waiting"
		switch {
		case cs.State.Running != nil:
			state = "running"
		case cs.State.Terminated != nil:
			state = fmt.Sprintf("terminated(%d %s)", cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
		case cs.State.Waiting != nil:
			state = "waiting(" + cs.State.Waiting.Reason + ")"
		}
		s += fmt.Sprintf(" %s=%s restarts=%d", cs.Name, state, cs.RestartCount)
	}
	return s
}

// DescribeNode is a one-line summary for failure messages.
func DescribeNode(n *v1.Node) string {
	if n == nil {
		return "absent"
	}
	s := "conditions:"
	for _, c := range n.Status.Conditions {
		s += fmt.Sprintf(" %s=%s(%s, heartbeat %s)", c.Type, c.Status, c.Reason, c.LastHeartbeatTime.Format("15:04:05"))
	}
	return s
}

// PodsListWatch lists and watches the pods of ns matching a label selector.
func PodsListWatch(client kubernetes.Interface, ns, labelSelector string) *cache.ListWatch {
	return &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = labelSelector
			return client.CoreV1().Pods(ns).List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = labelSelector
			return client.CoreV1().Pods(ns).Watch(ctx, o)
		},
	}
}

// WaitForPods watches the pods matching labelSelector until cond holds for
// the set as it stands (name -> pod; deleted pods are absent).
func WaitForPods(ctx context.Context, client kubernetes.Interface, ns, labelSelector string, cond func(map[string]*v1.Pod) bool) (map[string]*v1.Pod, error) {
	pods := map[string]*v1.Pod{}
	pre := func(store cache.Store) (bool, error) {
		for _, o := range store.List() {
			p := o.(*v1.Pod)
			pods[p.Name] = p
		}
		return cond(pods), nil
	}
	_, err := watchtools.UntilWithSync(ctx, PodsListWatch(client, ns, labelSelector), &v1.Pod{}, pre, func(e watch.Event) (bool, error) {
		p, ok := e.Object.(*v1.Pod)
		if !ok {
			return false, nil
		}
		if e.Type == watch.Deleted {
			delete(pods, p.Name)
		} else {
			pods[p.Name] = p
		}
		return cond(pods), nil
	})
	if err != nil {
		return pods, fmt.Errorf("pods %s in %s: %w", labelSelector, ns, err)
	}
	return pods, nil
}

// NodeHeartbeatAfter holds when the node is Ready with a Ready heartbeat at
// or after since (heartbeats have one-second resolution: since is rounded
// up), i.e. an edge reported after that moment rather than a stale status.
func NodeHeartbeatAfter(since time.Time) Condition[*v1.Node] {
	since = since.Truncate(time.Second).Add(time.Second)
	return func(n *v1.Node, exists bool) (bool, error) {
		if !exists || n == nil {
			return false, nil
		}
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady {
				return c.Status == v1.ConditionTrue && !c.LastHeartbeatTime.Time.Before(since), nil
			}
		}
		return false, nil
	}
}
