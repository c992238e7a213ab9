//go:build e2e

package e2eenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclwrite"
	"github.com/zclconf/go-cty/cty"
	"k8s.io/client-go/kubernetes"
)

// TunnelHCL is cloudhive's tunnel { } block for this egress: the node
// tunnel and CONNECT listeners, the CA of the API server's egress client,
// and the node ports the CONNECT proxy may reach.
func (e *Egress) TunnelHCL(allowedPorts ...int) string {
	ports := make([]string, len(allowedPorts))
	for i, p := range allowedPorts {
		ports[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf("tunnel {\n  listen            = %q\n  connect_listen    = %q\n  connect_client_ca = %q\n  allowed_ports     = [%s]\n}\n",
		e.TunnelAddr, e.ConnectAddr, e.CA.CertFile, strings.Join(ports, ", "))
}

// StartTunnelCloudhive starts cloudhive (replica "cloudhive") on kubeconfig
// with the egress's tunnel, allowing allowedPorts, and fetches a join token.
func StartTunnelCloudhive(ctx context.Context, t testing.TB, binDir, kubeconfig string, eg *Egress, allowedPorts ...int) (*Cloudhive, string) {
	t.Helper()
	cloud := StartCloudhive(t, binDir, "cloudhive", CloudhiveConfig{Kubeconfig: kubeconfig, ExtraHCL: eg.TunnelHCL(allowedPorts...)})
	token, err := cloud.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cloud, token
}

// TunnelEnv is a cluster whose kube-apiserver reaches every node through
// cloudhive's CONNECT proxy and the node's tunnel session, with that
// cloudhive running and a join token for it.
type TunnelEnv struct {
	Bin        string
	Containerd Containerd
	Egress     *Egress
	Cluster    *Cluster
	Client     kubernetes.Interface
	Cloud      *Cloudhive
	Token      string
}

// NewTunnelEnv makes the egress certificates, starts the cluster with the
// egress selector, seeds cloudhive's CA (casecret) and starts cloudhive
// with its tunnel allowing allowedPorts.
func NewTunnelEnv(ctx context.Context, t testing.TB, allowedPorts ...int) *TunnelEnv {
	t.Helper()
	e := &TunnelEnv{Bin: BinDir(t), Containerd: ContainerdFromEnv(t)}
	e.Egress = NewEgress(t, t.TempDir())
	e.Cluster = StartCluster(t, ClusterOptions{PodCIDR: e.Containerd.PodCIDR,
		ExtraAPIServerArgs: []string{e.Egress.APIServerArg()}})
	e.Client = e.Cluster.Client
	if err := e.Egress.SeedCASecret(ctx, e.Client); err != nil {
		t.Fatal(err)
	}
	e.Cloud, e.Token = StartTunnelCloudhive(ctx, t, e.Bin, e.Cluster.Kubeconfig, e.Egress, allowedPorts...)
	return e
}

// TunnelOptions turn on an edge's end of the tunnel.
type TunnelOptions struct {
	// Server is cloudhive's tunnel listener (Egress.TunnelAddr).
	Server string
	// LocalKubelet is where the tunnel's edge side dials for the node's
	// kubelet port.
	LocalKubelet string
	// KubeletAPIClientCA, when set, turns on edged's kubelet API on
	// LocalKubelet, trusting this CA's kube-apiserver-kubelet-client.
	KubeletAPIClientCA string
	// EdgedHTTPAddress, when set, moves edged's read-only API, whose port
	// the node reports as its kubelet port when the kubelet API is off.
	EdgedHTTPAddress string
	// PodCIDRs, when set, is edgehub's tunnel.pod_cidrs: the pod addresses
	// tunnel streams may reach (pods/<p>/proxy, services/<s>/proxy).
	PodCIDRs []string
}

// EnableTunnel adds edgehub's tunnel { } (and edged's kubelet_api { } and
// address, as o says) to the edge's joined config. Call it before Start.
func (e *Edge) EnableTunnel(t testing.TB, o TunnelOptions) {
	t.Helper()
	src, err := os.ReadFile(e.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclwrite.ParseConfig(src, e.ConfigFile, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	configOf := func(plugin string) *hclwrite.Body {
		pb := f.Body().FirstMatchingBlock("plugin", []string{plugin})
		if pb == nil {
			t.Fatalf("%s has no plugin %q block", e.ConfigFile, plugin)
		}
		cfg := pb.Body().FirstMatchingBlock("config", nil)
		if cfg == nil {
			cfg = pb.Body().AppendNewBlock("config", nil)
		}
		return cfg.Body()
	}
	tb := configOf("edgehub").AppendNewBlock("tunnel", nil).Body()
	tb.SetAttributeValue("enabled", cty.True)
	tb.SetAttributeValue("server", cty.StringVal(o.Server))
	tb.SetAttributeValue("local_kubelet", cty.StringVal(o.LocalKubelet))
	if len(o.PodCIDRs) > 0 {
		cidrs := make([]cty.Value, len(o.PodCIDRs))
		for i, c := range o.PodCIDRs {
			cidrs[i] = cty.StringVal(c)
		}
		tb.SetAttributeValue("pod_cidrs", cty.ListVal(cidrs))
	}
	if o.KubeletAPIClientCA != "" {
		kb := configOf("edged").AppendNewBlock("kubelet_api", nil).Body()
		kb.SetAttributeValue("enabled", cty.True)
		kb.SetAttributeValue("listen", cty.StringVal(o.LocalKubelet))
		kb.SetAttributeValue("client_ca_file", cty.StringVal(o.KubeletAPIClientCA))
		kb.SetAttributeValue("authorized_users", cty.ListVal([]cty.Value{cty.StringVal("kube-apiserver-kubelet-client")}))
	}
	if o.EdgedHTTPAddress != "" {
		configOf("edged").SetAttributeValue("http_address", cty.StringVal(o.EdgedHTTPAddress))
		e.EdgedAddress = o.EdgedHTTPAddress
	}
	if err := os.WriteFile(e.ConfigFile, f.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}
