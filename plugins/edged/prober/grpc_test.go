package prober

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	v1 "k8s.io/api/core/v1"
)

func TestGRPCProbe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	port := int32(ln.Addr().(*net.TCPAddr).Port)
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	svc := func(s string) *string { return &s }
	tests := []struct {
		name    string
		action  v1.GRPCAction
		want    Result
		wantMsg string
	}{
		{"overall serving", v1.GRPCAction{Port: port}, Success, ""},
		{"service not serving", v1.GRPCAction{Port: port, Service: svc("db")}, Failure, "NOT_SERVING"},
		{"unknown service", v1.GRPCAction{Port: port, Service: svc("nope")}, Failure, "NotFound"},
		{"nothing listening", v1.GRPCAction{Port: 1}, Failure, "health check"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, msg := grpcProbe(context.Background(), "127.0.0.1", &tt.action, time.Second)
			if res != tt.want || !strings.Contains(msg, tt.wantMsg) {
				t.Fatalf("result %v %q, want %v with %q", res, msg, tt.want, tt.wantMsg)
			}
		})
	}
}
