package cri

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestTarget(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"unix:///run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock", true},
		{"/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock", true},
		{"tcp://127.0.0.1:1234", "passthrough:///127.0.0.1:1234", true},
		{"unix://relative.sock", "", false},
		{"tcp://", "", false},
		{"http://x", "", false},
		{"", "", false},
	} {
		got, err := target(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("target(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestNewNoSocket(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_, err := New(ctx, "unix://"+filepath.Join(t.TempDir(), "none.sock"))
	if err == nil {
		t.Fatal("New on a missing socket succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("New on a missing socket took %v; want a fast failure", d)
	}
	t.Log(err)
}

// fakeServer serves a FakeRuntime over CRI gRPC, enough to test that
// Client maps calls and errors.
type fakeServer struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer
	f *FakeRuntime
}

func (s *fakeServer) Version(ctx context.Context, _ *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	return s.f.Version(ctx)
}

func (s *fakeServer) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	id, err := s.f.RunPodSandbox(ctx, r.Config, r.RuntimeHandler)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, statusOf(err)
}

func (s *fakeServer) PodSandboxStatus(ctx context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	resp, err := s.f.PodSandboxStatus(ctx, r.PodSandboxId, r.Verbose)
	return resp, statusOf(err)
}

func (s *fakeServer) ImageStatus(ctx context.Context, r *runtimeapi.ImageStatusRequest) (*runtimeapi.ImageStatusResponse, error) {
	resp, err := s.f.ImageStatus(ctx, r.Image, r.Verbose)
	return resp, statusOf(err)
}

// statusOf unwraps the fake's error to its gRPC status, as a server sends it.
func statusOf(err error) error {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(err)
	return status.Error(st.Code(), st.Message())
}

func TestClientOverGRPC(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "cri.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fs := &fakeServer{f: NewFakeRuntime(testImage)}
	runtimeapi.RegisterRuntimeServiceServer(srv, fs)
	runtimeapi.RegisterImageServiceServer(srv, fs)
	go srv.Serve(lis)
	defer srv.Stop()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx, "unix://"+sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	v, err := c.Version(ctx)
	if err != nil || v.RuntimeName != "fake" {
		t.Fatalf("Version = %v, %v", v, err)
	}
	sb, err := c.RunPodSandbox(ctx, sandboxConfig("g", false), "")
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.PodSandboxStatus(ctx, sb, false)
	if err != nil || st.Status.Id != sb {
		t.Fatalf("PodSandboxStatus = %v, %v", st, err)
	}
	if _, err := c.PodSandboxStatus(ctx, "nope", false); !IsNotFound(err) {
		t.Fatalf("PodSandboxStatus(nope) = %v, want NotFound", err)
	}
	is, err := c.ImageStatus(ctx, &runtimeapi.ImageSpec{Image: testImage}, false)
	if err != nil || is.Image == nil {
		t.Fatalf("ImageStatus = %v, %v", is, err)
	}
	// A method the server does not implement reports Unimplemented, wrapped.
	if _, err := c.ListImages(ctx, nil); status.Code(err) != codes.Unimplemented {
		t.Fatalf("ListImages = %v, want Unimplemented", err)
	}
}
