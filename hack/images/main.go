// Command images builds the test images — a busybox image and a pause image —
// as OCI image archives from Debian's busybox-static, and optionally imports
// them into a containerd (namespace k8s.io, for its CRI plugin) and tags the
// usual upstream names as local aliases. Nothing is pulled from a registry.
//
//	go run ./hack/images -out _output/images
//	go run ./hack/images -out _output/images -address _output/containerd/containerd.sock -snapshotter overlayfs
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
)

// Names of the images; the tests and edged's default config use these.
const (
	BusyboxImage = "edgehive.local/busybox:1.36"
	PauseImage   = "edgehive.local/pause:3.10"
	// AgnhostImage is the name the Kubernetes v1.37 e2e framework runs
	// agnhost under (k8s.io/kubernetes/test/utils/image/manifest.go).
	AgnhostImage = "registry.k8s.io/e2e-test-images/agnhost:2.66.1"
	// NonewprivsImage is the v1.37 e2e name of the image whose command
	// prints its effective uid from a set-user-ID root binary.
	NonewprivsImage = "registry.k8s.io/e2e-test-images/nonewprivs:1.4"
	// E2EBusyboxImage is the e2e framework's busybox: an alias of
	// BusyboxImage, or its own image when given a shell (-sh).
	E2EBusyboxImage = "registry.k8s.io/e2e-test-images/busybox:1.37.0-2"
)

// aliases are extra names given to the images once imported, so that the
// default upstream names resolve locally and are never pulled. The e2e
// names are those of the v1.37 e2e framework's image manifest.
var aliases = map[string][]string{
	BusyboxImage: {"docker.io/library/busybox:1.36", E2EBusyboxImage},
	PauseImage:   {"registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10.2"},
	AgnhostImage: {"registry.k8s.io/e2e-test-images/agnhost:2.55"},
}

// busyboxApplets are linked in the busybox image's /bin when the binary
// cannot list its own (busybox --list).
var busyboxApplets = []string{
	"sh", "sleep", "cat", "echo", "ls", "wget", "nc", "httpd", "env", "true", "false",
	"id", "hostname", "mount", "ps", "kill",
	// a few more that tests commonly reach for
	"grep", "head", "tail", "mkdir", "rm", "touch", "test", "[", "date", "uname", "whoami",
	"printf", "sed", "awk", "wc", "ip", "ping", "nslookup", "top", "df", "stat", "umount", "timeout",
}

func hostPlatform() platform {
	p := platform{OS: "linux", Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm":
		p.Variant = "v7"
	case "arm64":
		p.Variant = "v8"
	}
	return p
}

func main() {
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary (Debian's busybox-static)")
	out := flag.String("out", "_output/images", "directory for the OCI archives")
	address := flag.String("address", "", "containerd socket to import into (no import when empty)")
	namespace := flag.String("namespace", "k8s.io", "containerd namespace to import into")
	snapshotter := flag.String("snapshotter", "", "snapshotter to unpack with (containerd's default when empty)")
	ctrBin := flag.String("ctr", "ctr", "the ctr binary")
	agnhost := flag.String("agnhost", "", "static agnhost binary (hack/kube.sh agnhost) to pack as the e2e agnhost image (none when empty)")
	nonewprivs := flag.Bool("nonewprivs", false, "also build the e2e nonewprivs image (hack/images/nnp, built with go)")
	shell := flag.String("sh", "", "static shell (Debian's bash-static) for /bin/sh of a separate e2e busybox image (none: the e2e name is the busybox image)")
	flag.Parse()

	if err := run(*busybox, *agnhost, *shell, *nonewprivs, *out, *address, *namespace, *snapshotter, *ctrBin); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

// agnhostImage is agnhost on the busybox root, laid out as upstream's
// Dockerfile does: /agnhost as the entrypoint, pause as the default command,
// the agnhost-2 link, /uploads, and the user and group some tests look for.
// curl (hack/images/curl) stands in for upstream's curl, which the exec hooks
// of the lifecycle tests run.
func agnhostImage(busybox, agnhost, curl string, applets []string) Image {
	return Image{
		Name: AgnhostImage, Entrypoint: []string{"/agnhost"}, Cmd: []string{"pause"},
		Applets: applets, Busybox: busybox, Platform: hostPlatform(),
		Files:  []ExtraFile{{Name: "agnhost", Source: agnhost, Mode: 0o755}, {Name: "usr/bin/curl", Source: curl, Mode: 0o755}},
		Dirs:   []ExtraFile{{Name: "uploads"}},
		Links:  map[string]string{"agnhost-2": "agnhost"},
		Passwd: "user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh\n",
		Group:  "user-defined-in-image:x:1000:\ngroup-defined-in-image:x:50000:user-defined-in-image\n",
	}
}

// nonewprivsImage runs nnp, set-user-ID root, as upstream's image does.
func nonewprivsImage(busybox, nnp string) Image {
	return Image{
		Name: NonewprivsImage, Cmd: []string{"/usr/local/bin/nnp"},
		Applets: []string{"sh"}, Busybox: busybox, Platform: hostPlatform(),
		Dirs:  []ExtraFile{{Name: "usr/local"}, {Name: "usr/local/bin"}},
		Files: []ExtraFile{{Name: "usr/local/bin/nnp", Source: nnp, Mode: 0o4755}},
	}
}

// e2eBusyboxImage is busybox with shell as /bin/sh. Debian bookworm's busybox
// (1.35) ash leaves out of its children's environment the variables whose
// names are not shell identifiers ("data-1"), which upstream's e2e busybox
// image passes on and the conformance tests' "sh -c env" looks for.
func e2eBusyboxImage(busybox, shell string, applets []string) Image {
	var rest []string
	for _, a := range applets {
		if a != "sh" && a != "bash" {
			rest = append(rest, a)
		}
	}
	return Image{
		Name: E2EBusyboxImage, Cmd: []string{"sh"}, Applets: rest, Busybox: busybox, Platform: hostPlatform(),
		Files: []ExtraFile{{Name: "bin/sh", Source: shell, Mode: 0o755}},
	}
}

func run(busybox, agnhost, shell string, nonewprivs bool, out, address, namespace, snapshotter, ctrBin string) error {
	if err := checkBusybox(busybox); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	// Every applet, as upstream's busybox image has them: tests reach for
	// sysctl, nslookup and the like.
	applets := appletsOf(busybox)
	imgs := []struct {
		file string
		img  Image
	}{
		{"busybox.tar", Image{Name: BusyboxImage, Cmd: []string{"sh"}, Applets: applets, Busybox: busybox, Platform: hostPlatform()}},
		// The pause container only has to live as long as its sandbox; the CRI
		// plugin stops it with SIGKILL.
		{"pause.tar", Image{Name: PauseImage, Cmd: []string{"sleep", "infinity"}, Applets: []string{"sh", "sleep"}, Busybox: busybox, Platform: hostPlatform()}},
	}
	names := []string{BusyboxImage, PauseImage}
	aliasesOf := func(name string) []string { return aliases[name] }
	if shell != "" {
		if err := checkStatic(shell, "install Debian's bash-static"); err != nil {
			return err
		}
		imgs = append(imgs, struct {
			file string
			img  Image
		}{"e2e-busybox.tar", e2eBusyboxImage(busybox, shell, applets)})
		names = append(names, E2EBusyboxImage)
		aliasesOf = func(name string) []string {
			return slices.DeleteFunc(slices.Clone(aliases[name]), func(a string) bool { return a == E2EBusyboxImage })
		}
	}
	if agnhost != "" {
		if err := checkStatic(agnhost, "build it with hack/kube.sh agnhost"); err != nil {
			return err
		}
		curl := filepath.Join(out, "curl")
		if err := goBuild(curl, "github.com/edgehive/edgehive/hack/images/curl"); err != nil {
			return err
		}
		imgs = append(imgs, struct {
			file string
			img  Image
		}{"agnhost.tar", agnhostImage(busybox, agnhost, curl, applets)})
		names = append(names, AgnhostImage)
	}
	if nonewprivs {
		nnp := filepath.Join(out, "nnp")
		if err := goBuild(nnp, "github.com/edgehive/edgehive/hack/images/nnp"); err != nil {
			return err
		}
		imgs = append(imgs, struct {
			file string
			img  Image
		}{"nonewprivs.tar", nonewprivsImage(busybox, nnp)})
		names = append(names, NonewprivsImage)
	}
	var files []string
	for _, it := range imgs {
		p := filepath.Join(out, it.file)
		if err := writeFile(p, it.img); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		fmt.Printf("images: wrote %s (%s)\n", p, it.img.Name)
		files = append(files, p)
	}
	if address == "" {
		return nil
	}

	ctr := func(args ...string) (string, error) {
		full := append([]string{"--address", address, "-n", namespace}, args...)
		cmd := exec.Command(ctrBin, full...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("ctr %s: %w: %s", strings.Join(full, " "), err, strings.TrimSpace(stderr.String()))
		}
		return string(b), nil
	}
	for _, f := range files {
		args := []string{"images", "import", "--all-platforms"}
		if snapshotter != "" {
			args = append(args, "--snapshotter", snapshotter)
		}
		if _, err := ctr(append(args, f)...); err != nil {
			return err
		}
	}
	want := append([]string(nil), names...)
	for _, src := range names {
		for _, dst := range aliasesOf(src) {
			if _, err := ctr("images", "tag", "--force", src, dst); err != nil {
				return err
			}
			want = append(want, dst)
		}
	}
	list, err := ctr("images", "ls", "-q")
	if err != nil {
		return err
	}
	have := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		have[strings.TrimSpace(sc.Text())] = true
	}
	for _, w := range want {
		if !have[w] {
			return fmt.Errorf("image %s missing after import; ctr images ls -q says:\n%s", w, list)
		}
	}
	fmt.Printf("images: imported into %s (namespace %s): %s\n", address, namespace, strings.Join(want, ", "))
	return nil
}

// checkBusybox refuses a dynamically linked busybox: it would not run in an
// image without a libc.
func checkBusybox(p string) error {
	return checkStatic(p, "install Debian's busybox-static")
}

// checkStatic refuses a binary that is not a statically linked ELF file;
// hint says where to get a good one.
func checkStatic(p, hint string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("%w (%s)", err, hint)
	}
	defer f.Close()
	hdr := make([]byte, 4)
	if _, err := f.Read(hdr); err != nil || string(hdr) != "\x7fELF" {
		return fmt.Errorf("%s is not an ELF binary", p)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	if bytes.Contains(b, []byte("/lib64/ld-linux")) || bytes.Contains(b, []byte("/lib/ld-linux")) {
		return fmt.Errorf("%s is dynamically linked; %s", p, hint)
	}
	return nil
}

func writeFile(p string, img Image) error {
	tmp := p + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := WriteArchive(w, img); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, p)
}

// appletsOf lists the applets the busybox binary has (busybox --list), or
// the fixed list when it cannot say.
func appletsOf(busybox string) []string {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return busyboxApplets
	}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if a != "busybox" && path.Base(a) == a {
			applets = append(applets, a)
		}
	}
	if len(applets) == 0 {
		return busyboxApplets
	}
	return applets
}

// goBuild builds a static binary of pkg (one of this module's) to out.
func goBuild(out, pkg string) error {
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w: %s", pkg, err, b)
	}
	return nil
}
