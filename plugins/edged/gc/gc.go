// Package gc is edged's garbage collection, as the kubelet's: image GC
// frees the image filesystem from the high threshold down to the low one by
// removing unused images, least recently used first; container GC removes
// dead containers beyond a per-pod-container limit and dead sandboxes that
// are not their pod's newest.
package gc

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/clock"

	"github.com/edgehive/edgehive/plugins/edged/container"
	"github.com/edgehive/edgehive/plugins/edged/cri"
)

// ImagePolicy is when image GC runs and how far it frees.
type ImagePolicy struct {
	HighThresholdPercent int // disk usage that starts GC; 100 disables it
	LowThresholdPercent  int // usage GC frees down to
	// MinAge is how long an image must be known unused before it may go.
	MinAge time.Duration
	// Keep are images never removed (the sandbox image).
	Keep []string
}

// FsStats returns the capacity and available bytes of the filesystem at path.
type FsStats func(path string) (capacity, available uint64, err error)

// Statfs is FsStats from statfs(2).
func Statfs(path string) (capacity, available uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Blocks * uint64(st.Bsize), st.Bavail * uint64(st.Bsize), nil
}

type imageRecord struct {
	firstDetected time.Time
	lastUsed      time.Time
	size          uint64
}

// ImageGC tracks when images were last used and removes unused ones. Its
// methods are called from one goroutine (the GC loop).
type ImageGC struct {
	rt      cri.Runtime
	clock   clock.Clock
	log     hclog.Logger
	policy  ImagePolicy
	fsStats FsStats
	records map[string]*imageRecord // by image ID
}

// NewImageGC returns an image collector; fsStats nil means Statfs.
func NewImageGC(rt cri.Runtime, clk clock.Clock, log hclog.Logger, policy ImagePolicy, fsStats FsStats) *ImageGC {
	if fsStats == nil {
		fsStats = Statfs
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &ImageGC{rt: rt, clock: clk, log: log, policy: policy, fsStats: fsStats, records: map[string]*imageRecord{}}
}

// detect lists images and containers, records new images and marks the
// ones a container (running or not) uses as used now. It returns the IDs in use.
func (g *ImageGC) detect(ctx context.Context, now time.Time) (map[string]bool, []*runtimeapi.Image, error) {
	images, err := g.rt.ListImages(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	ctrs, err := g.rt.ListContainers(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	byRef := map[string]string{}
	for _, img := range images {
		byRef[img.Id] = img.Id
		for _, t := range img.RepoTags {
			byRef[t] = img.Id
		}
		for _, d := range img.RepoDigests {
			byRef[d] = img.Id
		}
	}
	inUse := map[string]bool{}
	for _, c := range ctrs {
		for _, ref := range []string{c.GetImageRef(), c.GetImage().GetImage(), c.GetImageId()} {
			if id, ok := byRef[ref]; ok {
				inUse[id] = true
			}
		}
	}
	for _, keep := range g.policy.Keep {
		if id, ok := byRef[keep]; ok {
			inUse[id] = true
		}
	}
	seen := map[string]bool{}
	for _, img := range images {
		seen[img.Id] = true
		r, ok := g.records[img.Id]
		if !ok {
			r = &imageRecord{firstDetected: now}
			g.records[img.Id] = r
		}
		r.size = img.Size
		if inUse[img.Id] || img.Pinned {
			r.lastUsed = now
		}
	}
	for id := range g.records {
		if !seen[id] {
			delete(g.records, id)
		}
	}
	return inUse, images, nil
}

// GarbageCollect frees image space when usage is at or above the high
// threshold; it returns the bytes freed.
func (g *ImageGC) GarbageCollect(ctx context.Context) (uint64, error) {
	now := g.clock.Now()
	inUse, images, err := g.detect(ctx, now)
	if err != nil {
		return 0, err
	}
	if g.policy.HighThresholdPercent >= 100 {
		return 0, nil
	}
	info, err := g.rt.ImageFsInfo(ctx)
	if err != nil {
		return 0, err
	}
	if len(info.GetImageFilesystems()) == 0 {
		return 0, errors.New("ImageFsInfo: no image filesystem")
	}
	capacity, available, err := g.fsStats(info.ImageFilesystems[0].GetFsId().GetMountpoint())
	if err != nil {
		return 0, err
	}
	if capacity == 0 {
		return 0, errors.New("image filesystem has no capacity")
	}
	usage := int(100 - available*100/capacity)
	if usage < g.policy.HighThresholdPercent {
		return 0, nil
	}
	want := int64(capacity)*int64(100-g.policy.LowThresholdPercent)/100 - int64(available)
	g.log.Info("image filesystem over the high threshold", "usage_percent", usage, "high", g.policy.HighThresholdPercent,
		"to_free_bytes", want)
	freed, err := g.freeSpace(ctx, now, want, inUse, images)
	if err == nil && int64(freed) < want {
		err = fmt.Errorf("wanted to free %d bytes, freed %d", want, freed)
	}
	return freed, err
}

// freeSpace removes unused images, least recently used (then oldest
// detected) first, until want bytes are freed.
func (g *ImageGC) freeSpace(ctx context.Context, now time.Time, want int64, inUse map[string]bool, images []*runtimeapi.Image) (uint64, error) {
	type candidate struct {
		id string
		r  *imageRecord
	}
	var cands []candidate
	for _, img := range images {
		r := g.records[img.Id]
		if inUse[img.Id] || img.Pinned || r == nil || now.Sub(r.firstDetected) < g.policy.MinAge {
			continue
		}
		cands = append(cands, candidate{img.Id, r})
	}
	sort.Slice(cands, func(i, j int) bool {
		a, b := cands[i].r, cands[j].r
		if !a.lastUsed.Equal(b.lastUsed) {
			return a.lastUsed.Before(b.lastUsed)
		}
		return a.firstDetected.Before(b.firstDetected)
	})
	var freed uint64
	var errs []error
	for _, c := range cands {
		if int64(freed) >= want {
			break
		}
		if err := g.rt.RemoveImage(ctx, &runtimeapi.ImageSpec{Image: c.id}); err != nil && !cri.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		g.log.Info("image removed", "image", c.id, "size", c.r.size)
		freed += c.r.size
		delete(g.records, c.id)
	}
	return freed, errors.Join(errs...)
}

// ContainerPolicy is what container GC keeps.
type ContainerPolicy struct {
	// MaxPerPodContainer is how many dead instances of one container of one
	// pod are kept (the newest).
	MaxPerPodContainer int
	// MinAge is how long a container must be dead before it may go.
	MinAge time.Duration
}

// ContainerGC removes dead containers and sandboxes edged made.
type ContainerGC struct {
	rt     cri.Runtime
	clock  clock.Clock
	log    hclog.Logger
	policy ContainerPolicy
}

// NewContainerGC returns a container collector.
func NewContainerGC(rt cri.Runtime, clk clock.Clock, log hclog.Logger, policy ContainerPolicy) *ContainerGC {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &ContainerGC{rt: rt, clock: clk, log: log, policy: policy}
}

// GarbageCollect removes, among the containers labelled with a pod UID,
// dead ones beyond MaxPerPodContainer per (pod, container name), and
// not-ready sandboxes that have no container left and are not their pod's
// newest. It returns how many containers and sandboxes it removed.
func (g *ContainerGC) GarbageCollect(ctx context.Context) (containers, sandboxes int, err error) {
	ctrs, err := g.rt.ListContainers(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	now := g.clock.Now()
	groups := map[string][]*runtimeapi.Container{}
	inSandbox := map[string]int{}
	for _, c := range ctrs {
		uid := c.GetLabels()[container.LabelPodUID]
		if uid == "" {
			continue
		}
		inSandbox[c.PodSandboxId]++
		if c.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			continue
		}
		key := uid + "/" + c.GetLabels()[container.LabelContainerName]
		groups[key] = append(groups[key], c)
	}
	var errs []error
	for _, dead := range groups {
		sort.Slice(dead, func(i, j int) bool { return dead[i].CreatedAt > dead[j].CreatedAt })
		for _, c := range dead[min(len(dead), max(g.policy.MaxPerPodContainer, 0)):] {
			if now.Sub(time.Unix(0, c.CreatedAt)) < g.policy.MinAge {
				continue
			}
			if err := g.rt.RemoveContainer(ctx, c.Id); err != nil && !cri.IsNotFound(err) {
				errs = append(errs, err)
				continue
			}
			inSandbox[c.PodSandboxId]--
			containers++
		}
	}
	sbs, err := g.rt.ListPodSandbox(ctx, nil)
	if err != nil {
		return containers, 0, errors.Join(append(errs, err)...)
	}
	newest := map[string]*runtimeapi.PodSandbox{}
	for _, sb := range sbs {
		uid := sb.GetLabels()[container.LabelPodUID]
		if uid == "" {
			continue
		}
		if n, ok := newest[uid]; !ok || sb.CreatedAt > n.CreatedAt {
			newest[uid] = sb
		}
	}
	for _, sb := range sbs {
		uid := sb.GetLabels()[container.LabelPodUID]
		if uid == "" || newest[uid] == sb || sb.State == runtimeapi.PodSandboxState_SANDBOX_READY || inSandbox[sb.Id] > 0 {
			continue
		}
		if err := g.rt.RemovePodSandbox(ctx, sb.Id); err != nil && !cri.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		sandboxes++
	}
	return containers, sandboxes, errors.Join(errs...)
}
