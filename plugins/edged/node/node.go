// Package node registers the edge node with the cloud and keeps it Ready, as
// KubeEdge v1.23's edged does: an insert of null/node/<name> with a v1.Node,
// then periodic status patches on null/nodepatch/<name> and Lease renewals on
// kube-node-lease/lease/<name>, all sent to metamanager.
package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/cri"
	"github.com/edgehive/edgehive/plugins/edged/internal/answer"
	"github.com/edgehive/edgehive/sdk"
)

// Constants of the node as KubeEdge reports it.
const (
	LabelEdge            = "node-role.kubernetes.io/edge"
	LabelAgent           = "node-role.kubernetes.io/agent"
	KubeletVersion       = "v1.32.10-kubeedge-v1.23.1"
	MaxPods              = 110
	LeaseDurationSeconds = 40
	LeaseNamespace       = "kube-node-lease"
	target               = "metamanager"
)

// Sender is what the reporter needs of the host (sdk.Context).
type Sender interface {
	Send(ctx context.Context, module string, msg *sdk.Message) error
	SendSync(ctx context.Context, module string, msg *sdk.Message) (*sdk.Message, error)
}

// Config of the reporter.
type Config struct {
	Name      string
	Labels    map[string]string
	Port      int32         // kubelet endpoint port (10350)
	Frequency time.Duration // node status and lease interval
	Source    string        // message source (module name)
	// ProcRoot and EtcRoot default to /proc and /etc (tests point them elsewhere).
	ProcRoot, EtcRoot string
	// StorageDir is on the file system whose size is the node's
	// ephemeral-storage (edged's data directory); none reported when empty.
	StorageDir string
}

// Reporter registers the node and reports its status and lease.
type Reporter struct {
	cfg   Config
	host  Sender
	rt    cri.Runtime
	clock clock.WithTicker
	log   hclog.Logger

	leaseRV   string
	leaseSeen bool
	// last Ready status and when it became so (transition time kept).
	lastReady  v1.ConditionStatus
	readySince metav1.Time
}

// New returns a reporter.
func New(cfg Config, host Sender, rt cri.Runtime, clk clock.WithTicker, log hclog.Logger) *Reporter {
	if cfg.ProcRoot == "" {
		cfg.ProcRoot = "/proc"
	}
	if cfg.EtcRoot == "" {
		cfg.EtcRoot = "/etc"
	}
	if cfg.Frequency <= 0 {
		cfg.Frequency = 10 * time.Second
	}
	if cfg.Source == "" {
		cfg.Source = "edged"
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Reporter{cfg: cfg, host: host, rt: rt, clock: clk, log: log}
}

// Run registers the node (retrying until the message is accepted), then
// reports status and lease every Frequency until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	for ctx.Err() == nil {
		err := r.Register(ctx)
		if err == nil {
			break
		}
		r.log.Warn("node registration not sent; retrying", "error", err)
		select {
		case <-ctx.Done():
			return
		case <-r.clock.After(5 * time.Second):
		}
	}
	t := r.clock.NewTicker(r.cfg.Frequency)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
		if err := r.ReportStatus(ctx); err != nil {
			r.log.Warn("node status not sent", "error", err)
		}
		if err := r.RenewLease(ctx); err != nil {
			r.log.Warn("node lease not sent", "error", err)
		}
	}
}

// Node builds the node object registered at start.
func (r *Reporter) Node(ctx context.Context) (*v1.Node, error) {
	labels := map[string]string{
		"kubernetes.io/hostname": r.cfg.Name,
		"kubernetes.io/os":       runtime.GOOS,
		"kubernetes.io/arch":     runtime.GOARCH,
		LabelEdge:                "",
		LabelAgent:               "",
	}
	for k, v := range r.cfg.Labels {
		labels[k] = v
	}
	st, err := r.Status(ctx)
	if err != nil {
		return nil, err
	}
	return &v1.Node{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Node"},
		ObjectMeta: metav1.ObjectMeta{Name: r.cfg.Name, Labels: labels}, Status: *st}, nil
}

// Status is the node's current status.
func (r *Reporter) Status(ctx context.Context) (*v1.NodeStatus, error) {
	mem, err := r.memTotal()
	if err != nil {
		return nil, err
	}
	res := v1.ResourceList{
		v1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		v1.ResourceMemory: *resource.NewQuantity(mem, resource.BinarySI),
		v1.ResourcePods:   *resource.NewQuantity(MaxPods, resource.DecimalSI),
	}
	// Pods that request ephemeral-storage are only scheduled to nodes
	// that report it.
	if r.cfg.StorageDir != "" {
		var fs unix.Statfs_t
		if err := unix.Statfs(r.cfg.StorageDir, &fs); err == nil {
			res[v1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(fs.Blocks)*fs.Bsize, resource.BinarySI)
		} else {
			r.log.Warn("ephemeral-storage capacity", "dir", r.cfg.StorageDir, "error", err)
		}
	}
	info := v1.NodeSystemInfo{
		MachineID:       r.readTrim(filepath.Join(r.cfg.EtcRoot, "machine-id")),
		BootID:          r.readTrim(filepath.Join(r.cfg.ProcRoot, "sys/kernel/random/boot_id")),
		KernelVersion:   r.readTrim(filepath.Join(r.cfg.ProcRoot, "sys/kernel/osrelease")),
		OSImage:         r.osImage(),
		OperatingSystem: runtime.GOOS,
		Architecture:    runtime.GOARCH,
		KubeletVersion:  KubeletVersion,
	}
	ready := v1.NodeCondition{Type: v1.NodeReady, Status: v1.ConditionTrue, Reason: "EdgeReady", Message: "edged is posting ready status"}
	if r.rt != nil {
		vctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		v, err := r.rt.Version(vctx)
		cancel()
		if err != nil {
			ready.Status, ready.Reason, ready.Message = v1.ConditionFalse, "ContainerRuntimeNotReady", err.Error()
		} else {
			info.ContainerRuntimeVersion = v.RuntimeName + "://" + v.RuntimeVersion
		}
	}
	now := metav1.NewTime(r.clock.Now().Truncate(time.Second))
	if ready.Status != r.lastReady {
		r.lastReady, r.readySince = ready.Status, now
	}
	ready.LastHeartbeatTime, ready.LastTransitionTime = now, r.readySince
	var addrs []v1.NodeAddress
	if ip := InternalIP(r.cfg.ProcRoot); ip != "" {
		addrs = append(addrs, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	addrs = append(addrs, v1.NodeAddress{Type: v1.NodeHostName, Address: r.cfg.Name})
	return &v1.NodeStatus{
		Capacity: res, Allocatable: res.DeepCopy(),
		Phase:           v1.NodeRunning,
		Conditions:      []v1.NodeCondition{ready},
		Addresses:       addrs,
		DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: r.cfg.Port}},
		NodeInfo:        info,
	}, nil
}

// Register sends the node insert.
func (r *Reporter) Register(ctx context.Context) error {
	n, err := r.Node(ctx)
	if err != nil {
		return err
	}
	msg := sdk.NewMessage("").BuildRouter(r.cfg.Source, sdk.GroupMeta, "null/node/"+r.cfg.Name, sdk.OpInsert)
	if err := msg.FillBody(n); err != nil {
		return err
	}
	return r.host.Send(ctx, target, msg)
}

// ReportStatus sends the status as KubeEdge v1.23 does: a patch on
// null/nodepatch/<name> whose content is a JSON string {"status":{…}} the
// cloud applies as a strategic merge (conditions merge by type).
func (r *Reporter) ReportStatus(ctx context.Context) error {
	st, err := r.Status(ctx)
	if err != nil {
		return err
	}
	body, err := json.Marshal(map[string]any{"status": st})
	if err != nil {
		return err
	}
	msg := sdk.NewMessage("").BuildRouter(r.cfg.Source, sdk.GroupMeta, "null/nodepatch/"+r.cfg.Name, sdk.OpPatch)
	if err := msg.FillBody(string(body)); err != nil {
		return err
	}
	return r.host.Send(ctx, target, msg)
}

// Lease is the node lease at now.
func (r *Reporter) Lease() *coordv1.Lease {
	d := int32(LeaseDurationSeconds)
	holder := r.cfg.Name
	now := metav1.NewMicroTime(r.clock.Now())
	return &coordv1.Lease{TypeMeta: metav1.TypeMeta{APIVersion: "coordination.k8s.io/v1", Kind: "Lease"},
		ObjectMeta: metav1.ObjectMeta{Name: r.cfg.Name, Namespace: LeaseNamespace, ResourceVersion: r.leaseRV},
		Spec:       coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &d, RenewTime: &now}}
}

// RenewLease queries the lease once (to learn whether it exists and its
// resourceVersion), inserts it when the answer says it does not exist, and
// updates it afterwards. Any other failed query is retried on the next call.
func (r *Reporter) RenewLease(ctx context.Context) error {
	resource := LeaseNamespace + "/lease/" + r.cfg.Name
	op := sdk.OpUpdate
	if !r.leaseSeen {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		q := sdk.NewMessage("").BuildRouter(r.cfg.Source, sdk.GroupMeta, resource, sdk.OpQuery)
		resp, err := r.host.SendSync(qctx, target, q)
		cancel()
		if err != nil {
			return fmt.Errorf("lease query: %w", err)
		}
		l, err := decodeLease(resp)
		switch {
		case errors.Is(err, answer.ErrNotFound):
			op = sdk.OpInsert
		case err != nil:
			return fmt.Errorf("lease query: %w", err)
		case l.Name != r.cfg.Name:
			op = sdk.OpInsert // not this node's lease: ours is not there
		default:
			r.leaseRV = l.ResourceVersion
		}
		r.leaseSeen = true
	}
	msg := sdk.NewMessage("").BuildRouter(r.cfg.Source, sdk.GroupMeta, resource, op)
	if err := msg.FillBody(r.Lease()); err != nil {
		return err
	}
	return r.host.Send(ctx, target, msg)
}

// decodeLease reads the Lease a query answer holds, in any of the shapes of
// package answer (metamanager's one-element list, the cloud's ObjectResp
// {"Object": <lease>, "Err": null}, ...). A NotFound answer wraps
// answer.ErrNotFound.
func decodeLease(resp *sdk.Message) (*coordv1.Lease, error) {
	raw, err := answer.Decode(resp)
	if err != nil {
		return nil, err
	}
	l := &coordv1.Lease{}
	if err := json.Unmarshal(raw, l); err != nil {
		return nil, fmt.Errorf("lease: %w", err)
	}
	return l, nil
}

func (r *Reporter) readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (r *Reporter) memTotal() (int64, error) {
	f, err := os.Open(filepath.Join(r.cfg.ProcRoot, "meminfo"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("meminfo: no MemTotal")
}

func (r *Reporter) osImage() string {
	f, err := os.Open(filepath.Join(r.cfg.EtcRoot, "os-release"))
	if err != nil {
		return "Unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return "Unknown"
}

// InternalIP is the first IPv4 address of the default-route interface (from
// <procRoot>/net/route), else the first non-loopback IPv4 address.
func InternalIP(procRoot string) string {
	if procRoot == "" {
		procRoot = "/proc"
	}
	if b, err := os.ReadFile(filepath.Join(procRoot, "net/route")); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 2 || f[1] != "00000000" {
				continue
			}
			if ifc, err := net.InterfaceByName(f[0]); err == nil {
				if addrs, err := ifc.Addrs(); err == nil {
					for _, a := range addrs {
						if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
							return n.IP.String()
						}
					}
				}
			}
		}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.String()
		}
	}
	return ""
}

// Allocatable is the machine's CPU count and memory in bytes (0 when
// /proc/meminfo is unreadable), what pods may use by default.
func Allocatable() (cpu, memory int64) {
	r := &Reporter{cfg: Config{ProcRoot: "/proc"}}
	mem, _ := r.memTotal()
	return int64(runtime.NumCPU()), mem
}
