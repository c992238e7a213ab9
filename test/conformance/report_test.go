package conformance

import (
	"strings"
	"testing"
	"time"
)

func TestParseReport(t *testing.T) {
	const report = `[{"SuiteDescription":"Kubernetes e2e suite","SpecReports":[
 {"LeafNodeType":"SynchronizedBeforeSuite","State":"passed"},
 {"ContainerHierarchyTexts":["[sig-node] Pods"],"LeafNodeType":"It","LeafNodeText":"should get a host IP [Conformance]","State":"passed"},
 {"ContainerHierarchyTexts":["[sig-node] Kubelet","when scheduling"],"LeafNodeType":"It","LeafNodeText":"should print the output to logs [Conformance]","State":"failed","Failure":{"Message":"timed out waiting\nmore detail"}},
 {"ContainerHierarchyTexts":["[sig-node] Pods"],"LeafNodeType":"It","LeafNodeText":"should be updated [Conformance]","State":"timedout","Failure":{"Message":"spec timeout"}},
 {"ContainerHierarchyTexts":["[sig-node] Sysctls"],"LeafNodeType":"It","LeafNodeText":"should support sysctls [Conformance]","State":"skipped","Failure":{"Message":"Only supported for providers [gce]"}},
 {"ContainerHierarchyTexts":["[sig-apps] Deployment"],"LeafNodeType":"It","LeafNodeText":"not focused","State":"skipped"},
 {"LeafNodeType":"SynchronizedAfterSuite","State":"failed","Failure":{"Message":"cleanup failed"}}
]}]`
	s, err := parseReport(strings.NewReader(report))
	if err != nil {
		t.Fatal(err)
	}
	if len(s.passed) != 1 || len(s.failed) != 2 || len(s.skipped) != 1 || s.notSelected != 1 || s.ran() != 3 || len(s.suiteFailures) != 1 {
		t.Fatalf("summary = %+v", s)
	}
	if want := "[sig-node] Kubelet when scheduling should print the output to logs [Conformance]"; s.failed[0].Name != want || s.failed[0].Reason != "timed out waiting" {
		t.Errorf("first failure = %+v, want %q with its first line", s.failed[0], want)
	}
	text := s.text(time.Minute)
	if !strings.HasPrefix(text, "conformance: 1 passed, 2 failed, 1 skipped while running (of 3 run; 1 not selected) in 1m0s\n") {
		t.Errorf("text = %q", text)
	}
	if !strings.Contains(text, "SUITE FAILED SynchronizedAfterSuite: cleanup failed") {
		t.Errorf("text lacks the suite failure: %q", text)
	}
}

func TestParseReportRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":      "junit?",
		"no suite":      "[]",
		"unknown state": `[{"SpecReports":[{"LeafNodeType":"It","LeafNodeText":"x","State":"exploded"}]}]`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parseReport(strings.NewReader(in)); err == nil {
				t.Fatalf("%q accepted", in)
			}
		})
	}
}
