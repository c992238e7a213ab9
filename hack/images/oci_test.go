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

	u := unpack(t, a.Bytes())
	for name, data := range u.files {
		if d, ok := strings.CutPrefix(name, "blobs/sha256/"); ok && d != "" && digestOf(data) != "sha256:"+d {
			t.Errorf("blob %s has digest %s", name, digestOf(data))
		}
	}
	if string(u.files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", u.files["oci-layout"])
	}
	if u.index.Manifests[0].Annotations[annotationRefName] != img.Name {
		t.Errorf("ref name = %q", u.index.Manifests[0].Annotations[annotationRefName])
	}
	if len(u.config.RootFS.DiffIDs) != 1 || u.config.RootFS.DiffIDs[0] != digestOf(u.layer) {
		t.Errorf("diff_ids = %v, want [%s]", u.config.RootFS.DiffIDs, digestOf(u.layer))
	}
	if strings.Join(u.config.Config.Cmd, " ") != "sh" || len(u.config.Config.Entrypoint) != 0 {
		t.Errorf("config = %+v", u.config.Config)
	}
	if _, ok := u.entries["bin/busybox"]; !ok || u.entries["bin/sh"] != "-> busybox" || u.entries["bin/ls"] != "-> busybox" {
		t.Errorf("layer entries = %v", u.entries)
	}
}

func TestCheckBusyboxRejectsNonELF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x")
	os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755)
	if err := checkBusybox(p); err == nil {
		t.Fatal("a shell script was accepted as busybox")
	}
}

// unpacked is an image archive taken apart.
type unpacked struct {
	files    map[string][]byte // the archive's files by name
	index    index
	manifest manifest
	config   imageConfig
	layer    []byte            // the first layer, uncompressed
	entries  map[string]string // its entries: "-> target" for a symlink, else the content
}

func unpack(t *testing.T, archive []byte) unpacked {
	t.Helper()
	u := unpacked{files: map[string][]byte{}, entries: map[string]string{}}
	for name, e := range readTar(t, bytes.NewReader(archive)) {
		u.files[name] = e.content
	}
	blob := func(d string) []byte { return u.files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")] }
	if err := json.Unmarshal(u.files["index.json"], &u.index); err != nil || len(u.index.Manifests) != 1 {
		t.Fatalf("index.json: %v %s", err, u.files["index.json"])
	}
	if err := json.Unmarshal(blob(u.index.Manifests[0].Digest), &u.manifest); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blob(u.manifest.Config.Digest), &u.config); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blob(u.manifest.Layers[0].Digest)))
	if err != nil {
		t.Fatal(err)
	}
	if u.layer, err = io.ReadAll(zr); err != nil {
		t.Fatal(err)
	}
	for name, e := range readTar(t, bytes.NewReader(u.layer)) {
		if e.header.Typeflag == tar.TypeSymlink {
			u.entries[name] = "-> " + e.header.Linkname
		} else {
			u.entries[name] = string(e.content)
		}
	}
	return u
}

// tarEntry is one entry of a tar stream.
type tarEntry struct {
	header  *tar.Header
	content []byte
}

func readTar(t *testing.T, r io.Reader) map[string]tarEntry {
	t.Helper()
	out := map[string]tarEntry{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[h.Name] = tarEntry{h, content}
	}
}

// TestAgnhostImage: the e2e agnhost image runs /agnhost with pause by
// default, and carries what upstream's Dockerfile adds.
func TestAgnhostImage(t *testing.T) {
	dir := t.TempDir()
	bb, ag, curl := filepath.Join(dir, "busybox"), filepath.Join(dir, "agnhost"), filepath.Join(dir, "curl")
	os.WriteFile(bb, []byte("\x7fELF fake busybox"), 0o755)
	os.WriteFile(ag, []byte("\x7fELF fake agnhost"), 0o755)
	os.WriteFile(curl, []byte("\x7fELF fake curl"), 0o755)
	var buf bytes.Buffer
	if err := WriteArchive(&buf, agnhostImage(bb, ag, curl, appletsOf(bb))); err != nil {
		t.Fatal(err)
	}
	u := unpack(t, buf.Bytes())
	cfg, entries := u.config, u.entries
	if strings.Join(cfg.Config.Entrypoint, " ") != "/agnhost" || strings.Join(cfg.Config.Cmd, " ") != "pause" {
		t.Errorf("config = %+v", cfg.Config)
	}
	for name, want := range map[string]string{
		"agnhost":      "\x7fELF fake agnhost",
		"agnhost-2":    "-> agnhost",
		"usr/bin/curl": "\x7fELF fake curl",
		"bin/sh":       "-> busybox",
		"uploads/":     "",
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

func TestNonewprivsImageIsSetUIDRoot(t *testing.T) {
	dir := t.TempDir()
	bb, nnp := filepath.Join(dir, "busybox"), filepath.Join(dir, "nnp")
	for _, f := range []string{bb, nnp} {
		if err := os.WriteFile(f, []byte("\x7fELF "+f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, nonewprivsImage(bb, nnp)); err != nil {
		t.Fatal(err)
	}
	u := unpack(t, buf.Bytes())
	e, ok := readTar(t, bytes.NewReader(u.layer))["usr/local/bin/nnp"]
	if !ok {
		t.Fatal("usr/local/bin/nnp missing")
	}
	if e.header.Mode&0o4000 == 0 || e.header.Uid != 0 {
		t.Errorf("nnp mode %o uid %d, want set-user-ID root", e.header.Mode, e.header.Uid)
	}
	if got := u.config.Config.Cmd; !slices.Equal(got, []string{"/usr/local/bin/nnp"}) {
		t.Errorf("cmd %v", got)
	}
}

func TestE2EBusyboxImageHasItsOwnShell(t *testing.T) {
	dir := t.TempDir()
	bb, shell := filepath.Join(dir, "busybox"), filepath.Join(dir, "bash-static")
	os.WriteFile(bb, []byte("\x7fELF fake busybox"), 0o755)
	os.WriteFile(shell, []byte("\x7fELF fake shell"), 0o755)
	var buf bytes.Buffer
	if err := WriteArchive(&buf, e2eBusyboxImage(bb, shell, []string{"sh", "ash", "bash", "env", "cat"})); err != nil {
		t.Fatal(err)
	}
	entries := unpack(t, buf.Bytes()).entries
	for name, want := range map[string]string{"bin/sh": "\x7fELF fake shell", "bin/ash": "-> busybox", "bin/env": "-> busybox"} {
		if entries[name] != want {
			t.Errorf("%s = %q, want %q", name, entries[name], want)
		}
	}
	if _, ok := entries["bin/bash"]; ok {
		t.Errorf("bin/bash is busybox's ash, not the shell")
	}
}
