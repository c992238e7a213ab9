package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/edgehive/edgehive/host/config"
	"github.com/edgehive/edgehive/plugins/edgehub"
)

// cmdJoin is KubeEdge's `keadm join`: fetch the node certificate with a
// bootstrap token and write a config that starts the six plugins against
// that cloud.
func cmdJoin(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("join", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cloud := fs.String("cloud", "", "the cloud's address (host or IP); cloudhub on -port, certificates on -https-port")
	token := fs.String("token", "", "join token from `cloudhive token` (or keadm gettoken)")
	node := fs.String("node", "", "node name (default: the host name, lower-cased)")
	cfgPath := fs.String("config", "/etc/edgehive/edgehive.hcl", "config file to write")
	dataDir := fs.String("data-dir", "/var/lib/edgehive", "data_dir of the config; certificates go under <data-dir>/certs")
	port := fs.Int("port", 10000, "cloudhub websocket port")
	httpsPort := fs.Int("https-port", 10002, "certificate service port")
	force := fs.Bool("force", false, "overwrite an existing config file")
	timeout := fs.Duration("timeout", time.Minute, "how long the certificate request may take")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cloud == "" || *token == "" {
		fmt.Fprint(stderr, "usage: edgehive join -cloud HOST -token TOKEN [-node NAME] [-config FILE]\n")
		return 2
	}
	if err := join(*cloud, *token, *node, *cfgPath, *dataDir, *port, *httpsPort, *force, *timeout); err != nil {
		fmt.Fprintf(stderr, "edgehive: join: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "joined: node certificate in %s, config in %s; start with: edgehive run -config %s\n",
		filepath.Join(*dataDir, "certs"), *cfgPath, *cfgPath)
	return 0
}

func join(cloud, token, node, cfgPath, dataDir string, port, httpsPort int, force bool, timeout time.Duration) error {
	if node == "" {
		h, err := os.Hostname()
		if err != nil {
			return err
		}
		node = strings.ToLower(h)
	}
	if _, err := os.Stat(cfgPath); err == nil && !force {
		return fmt.Errorf("%s exists (use -force to overwrite)", cfgPath)
	}
	absData, err := filepath.Abs(dataDir)
	if err != nil {
		return err
	}
	certs := filepath.Join(absData, "certs")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return err
	}
	ca, cert, key := filepath.Join(certs, "ca.crt"), filepath.Join(certs, "node.crt"), filepath.Join(certs, "node.key")
	httpsServer := "https://" + net.JoinHostPort(cloud, fmt.Sprint(httpsPort))
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := edgehub.Bootstrap(ctx, httpsServer, token, node, ca, cert, key); err != nil {
		return fmt.Errorf("certificate: %w", err)
	}
	src := joinConfig(node, absData, net.JoinHostPort(cloud, fmt.Sprint(port)), httpsServer, ca, cert, key)
	// What we write must load: check it as `validate` would read it.
	if _, diags := config.Parse(cfgPath, []byte(src)); diags.HasErrors() {
		return errors.Join(errors.New("generated config does not parse"), diags)
	}
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		return err
	}
	return os.WriteFile(cfgPath, []byte(src), 0o644)
}

func joinConfig(node, dataDir, server, httpsServer, ca, cert, key string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by `edgehive join`.\nnode_name = %q\ndata_dir  = %q\n\n", node, dataDir)
	b.WriteString("log {\n  level = \"info\"\n}\n\nadmin {\n  socket = \"/run/edgehive/admin.sock\"\n}\n\n")
	fmt.Fprintf(&b, "plugin \"edgehub\" {\n  gomaxprocs = 1\n  config {\n    server               = %q\n    https_server         = %q\n"+
		"    tls_ca_file          = %q\n    tls_cert_file        = %q\n    tls_private_key_file = %q\n  }\n}\n",
		server, httpsServer, ca, cert, key)
	for _, p := range []string{"edged", "metamanager", "eventbus", "devicetwin", "servicebus"} {
		fmt.Fprintf(&b, "\nplugin %q {\n  gomaxprocs = 1\n}\n", p)
	}
	return b.String()
}
