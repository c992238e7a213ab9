package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image spec (v1.0).
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"

	annotationRefName = "org.opencontainers.image.ref.name"
	// containerd reads the full image name from this one first.
	annotationContainerdName = "io.containerd.image.name"
)

// epoch is the time stamp of every file and of the image: the archives are
// reproducible byte for byte.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant,omitempty"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type imageConfig struct {
	Created      string        `json:"created"`
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Variant      string        `json:"variant,omitempty"`
	Config       runConfig     `json:"config"`
	RootFS       rootFS        `json:"rootfs"`
	History      []historyItem `json:"history"`
}

type runConfig struct {
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

type historyItem struct {
	Created   string `json:"created"`
	CreatedBy string `json:"created_by"`
}

// Image describes one single-layer image to build.
type Image struct {
	Name     string   // full reference, e.g. edgehive.local/busybox:1.36
	Cmd      []string // the image's Cmd; no Entrypoint
	Applets  []string // busybox applets linked in /bin
	Busybox  string   // path of the static busybox binary to copy in
	Platform platform
	// Entrypoint is the image's Entrypoint (none when empty).
	Entrypoint []string
	// Files are extra regular files, read from the host.
	Files []ExtraFile
	// Dirs are extra directories (mode 0755 unless Mode is set).
	Dirs []ExtraFile
	// Links are extra symlinks: path in the image -> target.
	Links map[string]string
	// Passwd and Group are appended to /etc/passwd and /etc/group.
	Passwd, Group string
}

// ExtraFile is a file or directory added to an image's root file system.
type ExtraFile struct {
	Name   string // path in the image, relative ("agnhost", "uploads")
	Source string // host file to copy (files only)
	Mode   int64
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// rootfsTar returns the uncompressed layer: a minimal root file system with
// busybox in /bin and a symlink per applet.
func rootfsTar(img Image) ([]byte, error) {
	bb, err := os.ReadFile(img.Busybox)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string, mode int64) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(name string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []struct {
		name string
		mode int64
	}{
		{"bin", 0o755}, {"dev", 0o755}, {"etc", 0o755}, {"home", 0o755}, {"proc", 0o555},
		{"root", 0o700}, {"sys", 0o555}, {"tmp", 0o1777}, {"usr", 0o755}, {"usr/bin", 0o755},
		{"var", 0o755}, {"var/run", 0o755}, {"var/www", 0o755},
	} {
		if err := dir(d.name, d.mode); err != nil {
			return nil, err
		}
	}
	if err := file("bin/busybox", 0o755, bb); err != nil {
		return nil, err
	}
	applets := append([]string(nil), img.Applets...)
	sort.Strings(applets)
	for _, a := range applets {
		if a == "busybox" || a == "" || path.Base(a) != a {
			return nil, fmt.Errorf("bad applet name %q", a)
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	for _, d := range img.Dirs {
		if err := checkImagePath(d.Name); err != nil {
			return nil, err
		}
		mode := d.Mode
		if mode == 0 {
			mode = 0o755
		}
		if err := dir(d.Name, mode); err != nil {
			return nil, err
		}
	}
	for _, f := range img.Files {
		if err := checkImagePath(f.Name); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(f.Source)
		if err != nil {
			return nil, fmt.Errorf("image file %s: %w", f.Name, err)
		}
		if err := file(f.Name, f.Mode, data); err != nil {
			return nil, err
		}
	}
	links := make([]string, 0, len(img.Links))
	for name := range img.Links {
		links = append(links, name)
	}
	sort.Strings(links)
	for _, name := range links {
		if err := checkImagePath(name); err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: img.Links[name], Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return nil, err
		}
	}
	// /usr/bin/env for "#!/usr/bin/env sh" scripts.
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/env", Linkname: "/bin/busybox", Mode: 0o777, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name, data string
	}{
		{"etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n" + img.Passwd},
		{"etc/group", "root:x:0:\nnogroup:x:65534:\n" + img.Group},
		{"etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"},
	} {
		if err := file(f.name, 0o644, []byte(f.data)); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkImagePath refuses absolute paths and paths that climb out of the root.
func checkImagePath(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == ".." || strings.HasPrefix(name, "../") {
		return fmt.Errorf("bad image path %q", name)
	}
	return nil
}

func gzipBytes(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	// No name and no mod time in the header: reproducible output.
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive writes img as an OCI image layout in a tar archive to w.
func WriteArchive(w io.Writer, img Image) error {
	layer, err := rootfsTar(img)
	if err != nil {
		return err
	}
	layerGz, err := gzipBytes(layer)
	if err != nil {
		return err
	}
	created := epoch.Format(time.RFC3339)
	cfg, err := json.Marshal(imageConfig{
		Created:      created,
		Architecture: img.Platform.Architecture,
		OS:           img.Platform.OS,
		Variant:      img.Platform.Variant,
		Config: runConfig{
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
		},
		RootFS:  rootFS{Type: "layers", DiffIDs: []string{digestOf(layer)}},
		History: []historyItem{{Created: created, CreatedBy: "edgehive hack/images: Debian busybox-static"}},
	})
	if err != nil {
		return err
	}
	man, err := json.Marshal(manifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        descriptor{MediaType: mediaTypeConfig, Digest: digestOf(cfg), Size: int64(len(cfg))},
		Layers:        []descriptor{{MediaType: mediaTypeLayerGz, Digest: digestOf(layerGz), Size: int64(len(layerGz))}},
	})
	if err != nil {
		return err
	}
	plat := img.Platform
	idx, err := json.Marshal(index{
		SchemaVersion: 2,
		MediaType:     mediaTypeIndex,
		Manifests: []descriptor{{
			MediaType: mediaTypeManifest,
			Digest:    digestOf(man),
			Size:      int64(len(man)),
			Annotations: map[string]string{
				annotationRefName:        img.Name,
				annotationContainerdName: img.Name,
			},
			Platform: &plat,
		}},
	})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
	}
	for _, b := range [][]byte{layerGz, cfg, man} {
		if err := put("blobs/sha256/"+digestOf(b)[len("sha256:"):], b); err != nil {
			return err
		}
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("index.json", idx); err != nil {
		return err
	}
	return tw.Close()
}
