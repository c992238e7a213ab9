//go:build e2e

package e2eenv

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/edgehive/edgehive/cloud/cloudhub"
)

// Egress is what a kube-apiserver needs to reach nodes through cloudhive's
// tunnel: cloudhive's CA (made before the API server starts, because the
// egress config names it), an egress client certificate from a CA of its
// own, the CONNECT and tunnel addresses, and the egress selector file.
type Egress struct {
	CloudCA     *cloudhub.CA
	CloudCAFile string
	CA          *CA       // signs Client; cloudhive's connect_client_ca
	Client      CertFiles // the API server's egress client certificate
	ConnectAddr string    // cloudhive's CONNECT listener
	TunnelAddr  string    // cloudhive's node tunnel listener
	ConfigFile  string    // EgressSelectorConfiguration for --egress-selector-config-file
}

// NewEgress makes the certificates and writes the egress selector config
// under dir.
func NewEgress(t testing.TB, dir string) *Egress {
	t.Helper()
	cloudCA, err := cloudhub.NewCA(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	e := &Egress{CloudCA: cloudCA, CloudCAFile: filepath.Join(dir, "cloudhive-ca.crt"),
		ConnectAddr: fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		TunnelAddr:  fmt.Sprintf("127.0.0.1:%d", FreePort(t)),
		ConfigFile:  filepath.Join(dir, "egress-selector.yaml")}
	if err := os.WriteFile(e.CloudCAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cloudCA.Cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if e.CA, err = NewCA(dir, "egress-ca"); err != nil {
		t.Fatal(err)
	}
	if e.Client, err = e.CA.Issue(dir, "egress-client", CertSpec{CommonName: "kube-apiserver-egress", Client: true}); err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      tcp:
        url: https://%s
        tlsConfig:
          caBundle: %s
          clientCert: %s
          clientKey: %s
`, e.ConnectAddr, e.CloudCAFile, e.Client.CertFile, e.Client.KeyFile)
	if err := os.WriteFile(e.ConfigFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// APIServerArg is the kube-apiserver flag that uses the egress config.
func (e *Egress) APIServerArg() string { return "--egress-selector-config-file=" + e.ConfigFile }

// SeedCASecret gives cloudhive the CA the API server trusts, through
// casecret in the kubeedge namespace, as keadm would.
func (e *Egress) SeedCASecret(ctx context.Context, client kubernetes.Interface) error {
	if err := EnsureNamespace(ctx, client, "kubeedge"); err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(e.CloudCA.Key)
	if err != nil {
		return fmt.Errorf("cloudhive CA key: %w", err)
	}
	_, err = client.CoreV1().Secrets("kubeedge").Create(ctx, &v1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: cloudhub.CASecretName, Namespace: "kubeedge"},
		Data:       map[string][]byte{cloudhub.CADataKey: e.CloudCA.Cert.Raw, cloudhub.CAKeyDataKey: keyDER},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("casecret: %w", err)
	}
	return nil
}
