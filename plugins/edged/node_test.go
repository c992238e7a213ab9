package edged

import (
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func TestNodeRegistrationAndStatus(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	h := sdktest.New(t, NewWithRuntime(rt, clock.RealClock{}), sdktest.Options{ConfigJSON: `{"sandbox_image":"` + pause +
		`","node_status_update_frequency":"1s","node_labels":{"site":"s1"},"http_address":"127.0.0.1:10351"}`})
	h.OnSync(metaManager, func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		return resp, resp.FillBody([]string{})
	})
	name := sdktest.DefaultNodeName
	wait := func(op, resource string) *sdk.Message {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, ok := h.WaitSent(ctx, func(s sdktest.Sent) bool {
			return s.Target == metaManager && s.Message.Router.Operation == op && s.Message.Router.Resource == resource
		})
		if !ok {
			t.Fatalf("no %s %s", op, resource)
		}
		if s.Message.Router.Source != "edged" || s.Message.Router.Group != sdk.GroupMeta {
			t.Fatalf("route %+v", s.Message.Router)
		}
		return s.Message
	}
	var n v1.Node
	if err := wait(sdk.OpInsert, "null/node/"+name).DecodeContent(&n); err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Labels["node-role.kubernetes.io/edge"]; !ok || n.Labels["site"] != "s1" || n.Status.DaemonEndpoints.KubeletEndpoint.Port != 10351 ||
		n.Status.NodeInfo.ContainerRuntimeVersion != "fake://0.0.0" {
		t.Fatalf("node %+v", n)
	}
	wait(sdk.OpPatch, "null/nodepatch/"+name)
	wait(sdk.OpInsert, "kube-node-lease/lease/"+name) // the query answer is no lease
	wait(sdk.OpUpdate, "kube-node-lease/lease/"+name)
}
