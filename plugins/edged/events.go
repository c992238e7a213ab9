package edged

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/sdk"
)

// Event reporting limits: a bounded queue (overflow drops the new event), a
// token bucket on sends, and aggregation of repeats (same object, reason and
// message) into one event with a count, as client-go's recorder does.
const (
	eventQueueSize   = 256
	eventQPS         = 5
	eventBurst       = 25
	eventAggregation = 10 * time.Minute
	eventKeysMax     = 4096
)

type podEvent struct {
	pod                             *v1.Pod
	container, typ, reason, message string
	at                              time.Time
}

// seenEvent is an event already sent, kept to count its repeats.
type seenEvent struct {
	ev   *v1.Event
	last time.Time
}

// eventRecorder turns kuberuntime/prober events into KubeEdge event messages:
// source edged, group meta, operation insert (a new event) or update (a
// repeat, with its count), resource <ns>/event/<name>, content a v1.Event.
// One goroutine (run) owns the aggregation state.
type eventRecorder struct {
	node  string
	clock clock.Clock
	send  func(ctx context.Context, msg *sdk.Message) error
	queue chan podEvent
	limit flowcontrol.RateLimiter
	drops func()
}

func newEventRecorder(node string, clk clock.Clock, send func(ctx context.Context, msg *sdk.Message) error) *eventRecorder {
	return &eventRecorder{node: node, clock: clk, send: send, queue: make(chan podEvent, eventQueueSize),
		limit: flowcontrol.NewTokenBucketRateLimiterWithClock(eventQPS, eventBurst, clk)}
}

// record queues an event; it never blocks (a full queue drops it).
func (r *eventRecorder) record(pod *v1.Pod, container, typ, reason, message string) {
	select {
	case r.queue <- podEvent{pod: pod, container: container, typ: typ, reason: reason, message: message, at: r.clock.Now()}:
	default:
		if r.drops != nil {
			r.drops()
		}
	}
}

func (r *eventRecorder) run(ctx context.Context) {
	seen := map[string]*seenEvent{}
	for {
		var pe podEvent
		select {
		case <-ctx.Done():
			return
		case pe = <-r.queue:
		}
		key := fmt.Sprintf("%s/%s/%s/%s/%s", pe.pod.UID, pe.container, pe.typ, pe.reason, pe.message)
		op := sdk.OpInsert
		s, ok := seen[key]
		if ok && pe.at.Sub(s.last) < eventAggregation {
			s.ev.Count++
			s.ev.LastTimestamp = metav1.NewTime(pe.at)
			op = sdk.OpUpdate
		} else {
			if len(seen) >= eventKeysMax {
				for k, v := range seen {
					if pe.at.Sub(v.last) >= eventAggregation || len(seen) >= eventKeysMax {
						delete(seen, k)
					}
				}
			}
			s = &seenEvent{ev: r.newEvent(pe)}
			seen[key] = s
		}
		s.last = pe.at
		if !r.limit.TryAccept() {
			continue // over the rate: counted, sent with the next repeat
		}
		msg := sdk.NewMessage("").BuildRouter(Name, sdk.GroupMeta, s.ev.Namespace+"/event/"+s.ev.Name, op)
		if err := msg.FillBody(s.ev); err != nil {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_ = r.send(sctx, msg) // events are best effort
		cancel()
	}
}

func (r *eventRecorder) newEvent(pe podEvent) *v1.Event {
	ts := metav1.NewTime(pe.at)
	ref := v1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: pe.pod.Namespace, Name: pe.pod.Name,
		UID: pe.pod.UID, ResourceVersion: pe.pod.ResourceVersion}
	if pe.container != "" {
		ref.FieldPath = containerFieldPath(pe.pod, pe.container)
	}
	return &v1.Event{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Event"},
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", pe.pod.Name, pe.at.UnixNano()),
			Namespace: pe.pod.Namespace},
		InvolvedObject: ref, Reason: pe.reason, Message: pe.message, Type: pe.typ, Count: 1,
		Source:         v1.EventSource{Component: "kubelet", Host: r.node},
		FirstTimestamp: ts, LastTimestamp: ts,
		ReportingController: "kubelet", ReportingInstance: r.node,
	}
}

// containerFieldPath is the kubelet's fieldPath of a container in a pod.
func containerFieldPath(pod *v1.Pod, name string) string {
	for _, c := range pod.Spec.InitContainers {
		if c.Name == name {
			return "spec.initContainers{" + name + "}"
		}
	}
	for _, c := range pod.Spec.EphemeralContainers {
		if c.Name == name {
			return "spec.ephemeralContainers{" + name + "}"
		}
	}
	return "spec.containers{" + name + "}"
}
