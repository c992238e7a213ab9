package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestWriteArchive checks the layout: every blob is named by its digest,
// the index names the image, and the config's diff_id is the digest of the
// uncompressed layer.
func TestWriteArchive(t *testing.T) {
	bb := filepath.Join(t.TempDir(), "busybox")
	if err := os.WriteFile(bb, []byte("\x7fELF fake busybox"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Name: "edgehive.local/test:1", Cmd: []string{"sh"}, Applets: []string{"sh", "ls"}, Busybox: bb, Platform: hostPlatform()}
	var a, b bytes.Buffer
	if err := WriteArchive(&a, img); err != nil {
		t.Fatal(err)
	}
	if err := WriteArchive(&b, img); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("archive is not reproducible")
	}

	files := map[string][]byte{}
	tr := tar.NewReader(&a)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(tr)
		files[h.Name] = data
	}
	for name, data := range files {
		if d, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && d != "" && digestOf(data) != "sha256:"+d {
			t.Errorf("blob %s has digest %s", name, digestOf(data))
		}
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var idx index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, files["index.json"])
	}
	if idx.Manifests[0].Annotations[annotationRefName] != img.Name {
		t.Errorf("ref name = %q", idx.Manifests[0].Annotations[annotationRefName])
	}
	var man manifest
	if err := json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(idx.Manifests[0].Digest, "sha256:")], &man); err != nil {
		t.Fatal(err)
	}
	var cfg imageConfig
	if err := json.Unmarshal(files["blobs/sha256/"+strings.TrimPrefix(man.Config.Digest, "sha256:")], &cfg); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(files["blobs/sha256/"+strings.TrimPrefix(man.Layers[0].Digest, "sha256:")]))
	if err != nil {
		t.Fatal(err)
	}
	layer, _ := io.ReadAll(zr)
	if len(cfg.RootFS.DiffIDs) != 1 || cfg.RootFS.DiffIDs[0] != digestOf(layer) {
		t.Errorf("diff_ids = %v, want [%s]", cfg.RootFS.DiffIDs, digestOf(layer))
	}
	if strings.Join(cfg.Config.Cmd, " ") != "sh" || len(cfg.Config.Entrypoint) != 0 {
		t.Errorf("config = %+v", cfg.Config)
	}
	names := map[string]string{}
	lr := tar.NewReader(bytes.NewReader(layer))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = h.Linkname
	}
	if _, ok := names["bin/busybox"]; !ok || names["bin/sh"] != "busybox" || names["bin/ls"] != "busybox" {
		t.Errorf("layer entries = %v", names)
	}
}

func TestCheckBusyboxRejectsNonELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	if err := checkBusybox(p); err == nil {
		t.Fatal("a shell script was accepted as busybox")
	}
}

// readImage unpacks an archive: the image config and the layer's entries
// (name -> link target, or file content for regular files).
func readImage(t *testing.T, archive []byte) (imageConfig, map[string]string) {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name], _ = io.ReadAll(tr)
	}
	blob := func(d string) []byte { return files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] }
	var idx index
	var man manifest
	var cfg imageConfig
	if err := json.Unmarshal(files["index.json"], &idx); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(idx.Manifests[0].Digest), &man); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(man.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(man.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]string{}
	lr := tar.NewReader(zr)
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeSymlink {
			entries[h.Name] = "-> " + h.Linkname
			continue
		}
		b, _ := io.ReadAll(lr)
		entries[h.Name] = string(b)
	}
	return cfg, entries
}

// TestAgnhostImage: the e2e agnhost image runs /agnhost with pause by
// default, and carries what upstream's Dockerfile adds.
func TestAgnhostImage(t *testing.T) {
	dir := t.TempDir()
	bb, ag := filepath.Join(dir, "busybox"), filepath.Join(dir, "agnhost")
	os.WriteFile(bb, []byte("\x7fELF fake busybox"), 0o755)
	os.WriteFile(ag, []byte("\x7fELF fake agnhost"), 0o755)
	var buf bytes.Buffer
	if err := WriteArchive(&buf, agnhostImage(bb, ag, appletsOf(bb))); err != nil {
		t.Fatal(err)
	}
	cfg, entries := readImage(t, buf.Bytes())
	if strings.Join(cfg.Config.Entrypoint, " ") != "/agnhost" || strings.Join(cfg.Config.Cmd, " ") != "pause" {
		t.Errorf("config = %+v", cfg.Config)
	}
	for name, want := range map[string]string{
		"agnhost":   "\x7fELF fake agnhost",
		"agnhost-2": "-> agnhost",
		"bin/sh":    "-> busybox",
		"uploads/":  "",
	} {
		if got, ok := entries[name]; !ok || got != want {
			t.Errorf("%s = %q (present %t), want %q", name, got, ok, want)
		}
	}
	if !strings.Contains(entries["etc/group"], "group-defined-in-image:x:50000:") {
		t.Errorf("etc/group = %q", entries["etc/group"])
	}
}

func TestImagePathsChecked(t *testing.T) {
	bb := filepath.Join(t.TempDir(), "busybox")
	os.WriteFile(bb, []byte("\x7fELF"), 0o755)
	for _, bad := range []string{"/abs", "../up", "a/../../b", ""} {
		img := Image{Name: "x:1", Busybox: bb, Platform: hostPlatform(), Dirs: []ExtraFile{{Name: bad}}}
		if err := WriteArchive(io.Discard, img); err == nil {
			t.Errorf("dir %q accepted", bad)
		}
	}
}

func TestAppletsOfListsTheBinarysApplets(t *testing.T) {
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		t.Fatalf("busybox-static is needed (hack/setup.sh installs it): %v", err)
	}
	got := appletsOf(bb)
	for _, want := range []string{"sh", "sysctl", "nslookup", "["} {
		if !slices.Contains(got, want) {
			t.Errorf("applet %q missing from %d applets", want, len(got))
		}
	}
	if fallback := appletsOf("/nonexistent/busybox"); !slices.Equal(fallback, busyboxApplets) {
		t.Errorf("without a binary: %v, want the fixed list", fallback)
	}
}
