// Package supervisor runs plugin processes: one Supervisor per plugin starts
// its process through go-plugin, connects it to the router, watches it, and
// restarts or upgrades it alone while the others keep running.
package supervisor

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"

	"github.com/edgehive/edgehive/internal/grpcbuf"

	"github.com/edgehive/edgehive/host/router"
	"github.com/edgehive/edgehive/sdk"
	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// HostAPIVersions are the plugin API versions this host speaks, newest first.
var hostAPIVersions = []string{sdk.APIVersion1}

// NegotiateAPIVersion picks the newest plugin API version both sides speak.
func NegotiateAPIVersion(plugin []string) (string, error) {
	for _, v := range hostAPIVersions {
		if slices.Contains(plugin, v) {
			return v, nil
		}
	}
	return "", fmt.Errorf("no common plugin API version: host speaks %v, plugin %v", hostAPIVersions, plugin)
}

// ErrChecksum is returned when a plugin binary does not match its sha256.
var ErrChecksum = errors.New("plugin binary checksum mismatch")

// LaunchSpec says how to start one plugin process.
type LaunchSpec struct {
	Name     string
	Path     string
	SHA256   string
	Args     []string
	Env      []string // extra "K=V" entries
	LogLevel string
}

// Instance is one running process of a plugin.
type Instance struct {
	ID     string
	Path   string
	PID    int
	Info   *pluginv1.GetInfoResponse
	Schema *sdk.Schema

	client *plugin.Client
	rpc    pluginv1.PluginClient
	logger hclog.Logger

	att        *router.Attachment
	streamStop context.CancelFunc
	readerDone chan struct{}
	writerDone chan struct{}

	deathOnce sync.Once
	dead      chan struct{}
	deathMu   sync.Mutex
	death     error
	started   time.Time
}

// Launch starts the plugin process, checks its checksum and identity, and
// reads its info and config schema. It does not configure or connect it.
func Launch(ctx context.Context, spec LaunchSpec, id string, logger hclog.Logger) (*Instance, error) {
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Env = append(os.Environ(), sdk.EnvPluginName+"="+spec.Name)
	if spec.LogLevel != "" {
		cmd.Env = append(cmd.Env, sdk.EnvLogLevel+"="+spec.LogLevel)
	}
	cmd.Env = append(cmd.Env, spec.Env...)
	// The kernel kills the plugin if the host dies; the SDK also watches its parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}

	var secure *plugin.SecureConfig
	if spec.SHA256 != "" {
		sum, err := hex.DecodeString(spec.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("plugin %s: sha256 %q is not 64 hex digits", spec.Name, spec.SHA256)
		}
		secure = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	if _, err := os.Stat(spec.Path); err != nil {
		return nil, fmt.Errorf("plugin %s: binary %s: %w", spec.Name, spec.Path, err)
	}
	plog := logger.Named("plugin")
	bufPool := grpcbuf.New()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  sdk.Handshake,
		Plugins:          plugin.PluginSet{sdk.PluginKey: &sdk.GRPCPlugin{}},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           plog,
		StartTimeout:     20 * time.Second,
		SyncStdout:       lineLogger(plog, "stdout"),
		SyncStderr:       lineLogger(plog, "stderr"),
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sdk.MaxFrameBytes), grpc.MaxCallSendMsgSize(sdk.MaxFrameBytes)),
			experimental.WithBufferPool(bufPool),
		},
	})
	inst := &Instance{ID: id, Path: spec.Path, client: client, logger: logger, dead: make(chan struct{}), started: time.Now()}
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		if errors.Is(err, plugin.ErrChecksumsDoNotMatch) {
			return nil, fmt.Errorf("plugin %s: %w: %s does not have sha256 %s", spec.Name, ErrChecksum, spec.Path, spec.SHA256)
		}
		return nil, fmt.Errorf("plugin %s: start %s: %w", spec.Name, spec.Path, err)
	}
	if rc := client.ReattachConfig(); rc != nil {
		inst.PID = rc.Pid
	}
	raw, err := rpcClient.Dispense(sdk.PluginKey)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: dispense: %w", spec.Name, err)
	}
	inst.rpc = raw.(pluginv1.PluginClient)
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := inst.rpc.GetInfo(ictx, &pluginv1.GetInfoRequest{})
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: GetInfo: %w", spec.Name, err)
	}
	if info.GetName() != spec.Name {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: binary %s says its name is %q", spec.Name, spec.Path, info.GetName())
	}
	schema, err := sdk.SchemaFromProto(info.GetConfigSchema())
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("plugin %s: %w", spec.Name, err)
	}
	inst.Info, inst.Schema = info, schema
	return inst, nil
}

// Configure negotiates the API version and hands the plugin its config.
func (i *Instance) Configure(ctx context.Context, req *pluginv1.SetConfigRequest) error {
	v, err := NegotiateAPIVersion(i.Info.GetApiVersions())
	if err != nil {
		return fmt.Errorf("plugin %s: %w", i.Info.GetName(), err)
	}
	req.ApiVersion = v
	req.InstanceId = i.ID
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := i.rpc.SetConfig(cctx, req); err != nil {
		return fmt.Errorf("plugin %s: SetConfig: %w", i.Info.GetName(), err)
	}
	// A plugin may derive its group or version from its config: read them again.
	info, err := i.rpc.GetInfo(cctx, &pluginv1.GetInfoRequest{})
	if err != nil {
		return fmt.Errorf("plugin %s: GetInfo after SetConfig: %w", i.Info.GetName(), err)
	}
	if info.GetName() != i.Info.GetName() {
		return fmt.Errorf("plugin %s: renamed itself to %q after SetConfig", i.Info.GetName(), info.GetName())
	}
	i.Info = info
	return nil
}

// Connect opens the plugin's channel and attaches it to the router.
func (i *Instance) Connect(r *router.Router, active bool) error {
	sctx, cancel := context.WithCancel(context.Background())
	stream, err := i.rpc.Channel(sctx)
	if err != nil {
		cancel()
		return fmt.Errorf("plugin %s: open channel: %w", i.Info.GetName(), err)
	}
	att, err := r.Attach(i.Info.GetName(), i.ID, streamSink{stream}, active)
	if err != nil {
		cancel()
		return err
	}
	i.att, i.streamStop = att, cancel
	i.readerDone, i.writerDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(i.writerDone)
		if err := att.Run(sctx); err != nil && sctx.Err() == nil {
			i.die(err)
		}
	}()
	go func() {
		defer close(i.readerDone)
		defer att.EndIngress()
		for {
			frame, err := stream.Recv()
			if err != nil {
				i.die(fmt.Errorf("channel closed: %w", err))
				return
			}
			att.Ack(frame.GetAcks())
			att.Submit(frame.GetSends())
		}
	}()
	return nil
}

type streamSink struct {
	s pluginv1.Plugin_ChannelClient
}

func (s streamSink) Send(f *pluginv1.HostFrame) error { return s.s.Send(f) }

func (i *Instance) die(err error) {
	i.deathOnce.Do(func() {
		i.deathMu.Lock()
		i.death = err
		i.deathMu.Unlock()
		close(i.dead)
	})
}

// Dead is closed when the instance's process or channel has gone.
func (i *Instance) Dead() <-chan struct{} { return i.dead }

// DeathReason says why Dead was closed.
func (i *Instance) DeathReason() error {
	i.deathMu.Lock()
	defer i.deathMu.Unlock()
	return i.death
}

// Attachment is the instance's place in the router (nil before Connect).
func (i *Instance) Attachment() *router.Attachment { return i.att }

// Health asks the plugin whether it works.
// Health asks the plugin how it is. err means it did not answer in time (it
// hangs or is gone); an answer may still say that something it depends on
// is not working (healthy false, with the reason).
func (i *Instance) Health(ctx context.Context) (healthy bool, reason string, err error) {
	resp, err := i.rpc.Health(ctx, &pluginv1.HealthRequest{})
	if err != nil {
		return false, "", err
	}
	return resp.GetHealthy(), resp.GetMessage(), nil
}

// Stop ends the instance. Graceful: the plugin is asked to finish and flush
// its acknowledgements first. In every case the process is gone when Stop
// returns or the deadline has passed, and whatever it left unacknowledged is
// back in its mailbox.
func (i *Instance) Stop(ctx context.Context, graceful bool) {
	if graceful && i.rpc != nil {
		dl, ok := ctx.Deadline()
		if !ok {
			dl = time.Now().Add(5 * time.Second)
		}
		sctx, cancel := context.WithDeadline(ctx, dl)
		if _, err := i.rpc.Shutdown(sctx, &pluginv1.ShutdownRequest{DeadlineUnixMs: dl.UnixMilli()}); err != nil {
			i.logger.Debug("graceful shutdown failed", "instance", i.ID, "error", err)
		}
		cancel()
	}
	i.kill(ctx, graceful)
	if i.readerDone != nil {
		select {
		case <-i.readerDone:
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
	if i.streamStop != nil {
		i.streamStop()
	}
	if i.att != nil {
		if n := i.att.Close(); n > 0 {
			i.logger.Info("unacknowledged messages returned to the queue", "instance", i.ID, "count", n)
		}
	}
	i.die(errors.New("stopped"))
}

// kill ends the process, gracefully through go-plugin when asked, always
// with SIGKILL as the last word once the deadline passes.
func (i *Instance) kill(ctx context.Context, graceful bool) {
	if !graceful && i.PID > 0 {
		_ = syscall.Kill(i.PID, syscall.SIGKILL)
	}
	done := make(chan struct{})
	go func() {
		i.client.Kill()
		close(done)
	}()
	limit := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		limit = min(limit, max(time.Until(dl), 100*time.Millisecond))
	}
	select {
	case <-done:
	case <-time.After(limit):
		if i.PID > 0 {
			_ = syscall.Kill(i.PID, syscall.SIGKILL)
		}
		<-done
	}
}

// lineLogger turns a plugin's stdout or stderr into host log lines.
func lineLogger(l hclog.Logger, stream string) io.Writer {
	pr, pw := io.Pipe()
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l.Info("plugin output", "stream", stream, "line", sc.Text())
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	return pw
}
