package edged

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
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

// writeTestCA writes a self-signed CA certificate (PEM) and returns its path.
func writeTestCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestNodeReportsKubeletAPIPort: with the kubelet API on, node status
// points the API server at its port, not the read-only API's.
func TestNodeReportsKubeletAPIPort(t *testing.T) {
	rt := cri.NewFakeRuntime(busybox, pause)
	m := NewWithRuntime(rt, clock.RealClock{})
	h := sdktest.New(t, m, sdktest.Options{ConfigJSON: fmt.Sprintf(`{"sandbox_image":%q,"http_address":"127.0.0.1:0",
		"kubelet_api":{"enabled":true,"listen":"127.0.0.1:0","client_ca_file":%q}}`, pause, writeTestCA(t))})
	h.OnSync(metaManager, func(req *sdk.Message) (*sdk.Message, error) {
		resp := sdk.NewMessage(req.Header.ID).BuildRouter(metaManager, sdk.GroupMeta, req.Router.Resource, sdk.OpResponse)
		return resp, resp.FillBody([]string{})
	})
	_, port, err := net.SplitHostPort(m.KubeletAPIAddr())
	if err != nil {
		t.Fatalf("kubelet API address %q: %v", m.KubeletAPIAddr(), err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, ok := h.WaitSent(ctx, func(s sdktest.Sent) bool {
		return s.Target == metaManager && s.Message.Router.Operation == sdk.OpInsert && s.Message.Router.Resource == "null/node/"+sdktest.DefaultNodeName
	})
	if !ok {
		t.Fatal("no node registration")
	}
	var n v1.Node
	if err := s.Message.DecodeContent(&n); err != nil {
		t.Fatal(err)
	}
	if got := strconv.Itoa(int(n.Status.DaemonEndpoints.KubeletEndpoint.Port)); got != port {
		t.Fatalf("kubeletEndpoint port %s, the kubelet API listens on %s", got, port)
	}
}
