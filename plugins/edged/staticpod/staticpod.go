// Package staticpod reads static pod manifests (YAML or JSON v1.Pod) from a
// folder, as the kubelet's file source: each pod is named <name>-<node>, gets
// a UID derived from its content, the node name and its file, and the
// annotations kubernetes.io/config.{source,hash}.
package staticpod

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/yaml"
)

// Annotations set on static pods.
const (
	AnnotationSource = "kubernetes.io/config.source"
	AnnotationHash   = "kubernetes.io/config.hash"
	AnnotationMirror = "kubernetes.io/config.mirror"
	SourceFile       = "file"
)

// Read decodes one manifest file into a pod for node.
func Read(path, node string) (*v1.Pod, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pod := &v1.Pod{}
	if err := yaml.NewYAMLOrJSONDecoder(f, 4096).Decode(pod); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: empty manifest", path)
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if pod.Kind != "" && pod.Kind != "Pod" {
		return nil, fmt.Errorf("%s: kind %q is not Pod", path, pod.Kind)
	}
	if pod.Name == "" {
		return nil, fmt.Errorf("%s: pod has no name", path)
	}
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	pod.Name = pod.Name + "-" + strings.ToLower(node)
	pod.Spec.NodeName = node
	if pod.Spec.RestartPolicy == "" {
		pod.Spec.RestartPolicy = v1.RestartPolicyAlways
	}
	// The UID is stable for the same content, node and file, so a restarted
	// edged adopts what runs; a changed manifest is a new pod.
	b, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(b)
	h.Write([]byte(node))
	h.Write([]byte(path))
	sum := hex.EncodeToString(h.Sum(nil))[:32]
	pod.UID = types.UID(sum)
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[AnnotationSource] = SourceFile
	pod.Annotations[AnnotationHash] = sum
	return pod, nil
}

// Scan reads every *.yaml, *.yml and *.json manifest of dir (hidden files
// are skipped). A missing dir has no pods. Bad manifests are returned as errors
// next to the pods that could be read.
func Scan(dir, node string) ([]*v1.Pod, []error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, []error{err}
	}
	var pods []*v1.Pod
	var errs []error
	seen := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		ext := strings.ToLower(filepath.Ext(name))
		if e.IsDir() || strings.HasPrefix(name, ".") || (ext != ".yaml" && ext != ".yml" && ext != ".json") {
			continue
		}
		p, err := Read(filepath.Join(dir, name), node)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		full := p.Namespace + "/" + p.Name
		if other, dup := seen[full]; dup {
			errs = append(errs, fmt.Errorf("%s: pod %s already defined in %s", name, full, other))
			continue
		}
		seen[full] = name
		pods = append(pods, p)
	}
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods, errs
}

// Diff compares the pods of two scans by UID: pods to upsert and to delete.
func Diff(old map[types.UID]*v1.Pod, cur []*v1.Pod) (add []*v1.Pod, del []*v1.Pod, next map[types.UID]*v1.Pod) {
	next = map[types.UID]*v1.Pod{}
	for _, p := range cur {
		next[p.UID] = p
		if _, ok := old[p.UID]; !ok {
			add = append(add, p)
		}
	}
	for uid, p := range old {
		if _, ok := next[uid]; !ok {
			del = append(del, p)
		}
	}
	sort.Slice(del, func(i, j int) bool { return del[i].Name < del[j].Name })
	return add, del, next
}
