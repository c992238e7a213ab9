package podmanager

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func pod(ns, name, uid string) *v1.Pod {
	return &v1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)}}
}

func TestUpsertDelete(t *testing.T) {
	m := New()
	a := pod("default", "a", "u1")
	if r := m.Upsert(a); r != nil {
		t.Fatalf("replaced %v", r)
	}
	a2 := pod("default", "a", "u1")
	a2.Labels = map[string]string{"v": "2"}
	m.Upsert(a2)
	if p, _ := m.GetByUID("u1"); p != a2 {
		t.Fatal("update not kept")
	}
	// Same name, new UID: the old pod is replaced.
	b := pod("default", "a", "u2")
	if r := m.Upsert(b); r != a2 {
		t.Fatalf("replaced = %v, want the u1 pod", r)
	}
	if _, ok := m.GetByUID("u1"); ok || m.Len() != 1 {
		t.Fatal("old UID still there")
	}
	if p, ok := m.GetByName("default", "a"); !ok || p != b {
		t.Fatal("by name")
	}
	m.Upsert(pod("kube-system", "z", "u3"))
	if got := m.Pods(); len(got) != 2 || got[0].Name != "a" {
		t.Fatalf("pods = %v", got)
	}
	if m.Delete("u2") != b || m.Delete("u2") != nil {
		t.Fatal("delete")
	}
	if _, ok := m.GetByName("default", "a"); ok {
		t.Fatal("name kept after delete")
	}
}
