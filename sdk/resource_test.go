package sdk

import (
	"strings"
	"testing"
)

func TestBuildResource(t *testing.T) {
	tests := []struct {
		ns, typ, name string
		want          string
	}{
		{"default", ResourcePod, "nginx", "default/pod/nginx"},
		{"", ResourceNode, "n1", "null/node/n1"},
		{ClusterNamespace, ResourceNodePatch, "n1", "null/nodepatch/n1"},
		{"default", ResourcePod, "", "default/pod"},
		{"", ResourceNode, "", "null/node"},
		{"default", "device", "a/b", "default/device/a/b"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := BuildResource(tt.ns, tt.typ, tt.name); got != tt.want {
				t.Fatalf("BuildResource(%q, %q, %q) = %q, want %q", tt.ns, tt.typ, tt.name, got, tt.want)
			}
			// What BuildResource writes, ParseResource reads back.
			r, err := ParseResource(tt.want)
			if err != nil {
				t.Fatal(err)
			}
			wantNS := tt.ns
			if wantNS == "" {
				wantNS = ClusterNamespace
			}
			if r != (Resource{Namespace: wantNS, Type: tt.typ, Name: tt.name}) {
				t.Errorf("ParseResource(%q) = %+v", tt.want, r)
			}
		})
	}
}

func TestParseResource(t *testing.T) {
	tests := []struct {
		in          string
		want        Resource
		cluster     bool
		list        bool
		wantErrPart string // "" means no error
	}{
		{in: "default/pod/nginx", want: Resource{"default", "pod", "nginx"}},
		{in: "null/node/n1", want: Resource{"null", "node", "n1"}, cluster: true},
		{in: "default/pod", want: Resource{"default", "pod", ""}, list: true},
		{in: "null/node", want: Resource{"null", "node", ""}, cluster: true, list: true},
		{in: "default/device/a/b", want: Resource{"default", "device", "a/b"}},
		{in: "default/configmap/a/", want: Resource{"default", "configmap", "a/"}},
		{in: "", wantErrPart: "want <namespace>/<type>"},
		{in: "x", wantErrPart: "want <namespace>/<type>"},
		{in: "/pod/a", wantErrPart: "want <namespace>/<type>"},
		{in: "ns//a", wantErrPart: "want <namespace>/<type>"},
		{in: "ns/", wantErrPart: "want <namespace>/<type>"},
		{in: "ns/pod/", wantErrPart: "empty name"},
		{in: "//", wantErrPart: "want <namespace>/<type>"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseResource(tt.in)
			if tt.wantErrPart != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrPart) {
					t.Fatalf("ParseResource(%q) = %+v, %v; want an error containing %q", tt.in, r, err, tt.wantErrPart)
				}
				if !strings.Contains(err.Error(), `"`+tt.in+`"`) {
					t.Errorf("error %q does not quote the input", err)
				}
				if r != (Resource{}) {
					t.Errorf("error with a non-zero resource %+v", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r != tt.want {
				t.Fatalf("ParseResource(%q) = %+v, want %+v", tt.in, r, tt.want)
			}
			if r.ClusterScoped() != tt.cluster || r.IsList() != tt.list {
				t.Errorf("ClusterScoped %v IsList %v, want %v %v", r.ClusterScoped(), r.IsList(), tt.cluster, tt.list)
			}
			if r.String() != tt.in {
				t.Errorf("String() = %q, want %q", r.String(), tt.in)
			}
		})
	}
}

func TestResourceStringClusterScoped(t *testing.T) {
	r := Resource{Type: ResourceNode, Name: "n1"}
	if got := r.String(); got != "null/node/n1" {
		t.Errorf("String() = %q, want null/node/n1", got)
	}
	if r.ClusterScoped() {
		t.Error("ClusterScoped() is about the parsed namespace, which is empty here")
	}
}
