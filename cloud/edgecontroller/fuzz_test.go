package edgecontroller

import (
	"context"
	"testing"

	"github.com/hashicorp/go-hclog"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/edgehive/edgehive/cloud/nodelink/nodelinktest"
	"github.com/edgehive/edgehive/sdk"
)

// FuzzHandleUpstream feeds arbitrary operations, resources and contents from
// a node to the upstream handler: it must answer or ignore them, never panic.
func FuzzHandleUpstream(f *testing.F) {
	seeds := []struct{ op, resource, content string }{
		{sdk.OpInsert, "null/node/edge-1", `{"metadata":{"name":"edge-1"}}`},
		{sdk.OpPatch, "null/nodepatch/edge-1", `"{\"status\":{}}"`},
		{sdk.OpPatch, "default/podpatch/mine", `"{\"metadata\":{\"uid\":\"u\"},\"status\":{\"phase\":\"Running\"}}"`},
		{sdk.OpDelete, "default/pod/mine", `{"gracePeriodSeconds":0,"preconditions":{"uid":"uid-pod-mine"}}`},
		{sdk.OpDelete, "default/pod/mine", `"uid-pod-mine"`},
		{sdk.OpUpdate, "kube-node-lease/lease/edge-1", `{"spec":{"holderIdentity":"edge-1"}}`},
		{sdk.OpQuery, "default/serviceaccounttoken/default", `{"spec":{"boundObjectRef":{"kind":"Pod","name":"mine"}}}`},
		{sdk.OpUpdate, "default/podstatus", `[{"Name":"mine","UID":"x","Status":{}}]`},
		{sdk.OpPatch, "default/event/e", `{"Event":{"involvedObject":{"kind":"Node","name":"edge-1"}},"Data":"{}"}`},
		{sdk.OpQuery, "node/edge-1/default/configmap/cfg", ``},
	}
	for _, s := range seeds {
		f.Add(s.op, s.resource, s.content)
	}
	client := fake.NewClientset([]runtime.Object{edgeNode(edge1), pod("mine", edge1)}...)
	c, err := New(client, nodelinktest.New(edge1), hclog.NewNullLogger(), Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, op, resource, content string) {
		m := sdk.NewMessage("").BuildRouter("edged", sdk.GroupMeta, resource, op)
		if content != "" {
			m.Content = []byte(content) // possibly invalid JSON: cloudhub validates, but be safe
		}
		c.handleUpstream(context.Background(), edge1, m)
		if p := c.panics.Load(); p > 0 {
			t.Fatalf("handler panicked on %s %q %q", op, resource, content)
		}
	})
}
