package admin

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// Listen opens the admin listener: a unix socket at socketPath or a TCP
// listener on address; exactly one of them must be non-empty.
//
// The socket gets mode 0600 because the API is unauthenticated and can
// restart or replace plugins: only the host's user (root) may use it. Its
// parent directory is created 0755 if missing. A stale socket left by a
// crashed host is removed, but a socket some live process still answers on
// is not (two hosts must not share a socket), and neither is a non-socket
// file (a typo in the config must not delete data).
//
// address must be a loopback address ("127.0.0.1:9900", "[::1]:9900" or
// "localhost:9900"); anything else is refused, for the same reason.
func Listen(socketPath, address string) (net.Listener, error) {
	switch {
	case socketPath != "" && address != "":
		return nil, errors.New("admin: listen: both a socket path and an address given, want one")
	case socketPath != "":
		return listenUnix(socketPath)
	case address != "":
		return listenLoopback(address)
	default:
		return nil, errors.New("admin: listen: neither a socket path nor an address given")
	}
}

func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("admin: create socket directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}

	// Bind under a temporary name, chmod, then rename into place: bound
	// directly at path, the socket would be reachable with the umask's
	// permissions until the chmod. Changing the umask instead would race
	// with every other goroutine creating files.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp"+strconv.Itoa(os.Getpid()))
	_ = os.Remove(tmp) // a leftover of our own pid from a crash
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("admin: listen on unix socket %s: %w", path, err)
	}
	ul.SetUnlinkOnClose(false) // we unlink the final name ourselves
	if err := os.Chmod(tmp, 0o600); err != nil {
		ul.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("admin: chmod unix socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ul.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("admin: move unix socket into place at %s: %w", path, err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ul.Close()
		return nil, fmt.Errorf("admin: stat unix socket %s: %w", path, err)
	}
	return &unixListener{UnixListener: ul, path: path, info: fi}, nil
}

// removeStaleSocket removes a socket file nobody listens on any more.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("admin: stat socket path %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("admin: %s exists and is not a unix socket; refusing to remove it", path)
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("admin: %s is in use by another process (is another edgehive host running?)", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin: remove stale socket %s: %w", path, err)
	}
	return nil
}

// unixListener removes its socket file on Close, but only if the file is
// still the one it created: a newer host may have replaced it already.
type unixListener struct {
	*net.UnixListener
	path string
	info fs.FileInfo
	once sync.Once
}

func (l *unixListener) Close() error {
	err := l.UnixListener.Close()
	l.once.Do(func() {
		if fi, statErr := os.Lstat(l.path); statErr == nil && os.SameFile(fi, l.info) {
			os.Remove(l.path)
		}
	})
	return err
}

func listenLoopback(address string) (net.Listener, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("admin: bad address %q: %w", address, err)
	}
	if host == "localhost" {
		// Resolving "localhost" asks the resolver, which could answer
		// anything; the loopback literal is what is meant.
		host = "127.0.0.1"
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("admin: address %q is not a loopback address; the admin API is unauthenticated and only served on loopback or a unix socket", address)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), port))
	if err != nil {
		return nil, fmt.Errorf("admin: listen on %s: %w", address, err)
	}
	return l, nil
}
