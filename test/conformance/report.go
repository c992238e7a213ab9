package conformance

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// The parts of ginkgo v2's JSON report (--ginkgo.json-report) read here; the
// report is a list of suite reports.
type ginkgoReport struct {
	SuiteDescription string       `json:"SuiteDescription"`
	SpecReports      []specReport `json:"SpecReports"`
}

type specReport struct {
	ContainerHierarchyTexts []string `json:"ContainerHierarchyTexts"`
	LeafNodeType            string   `json:"LeafNodeType"`
	LeafNodeText            string   `json:"LeafNodeText"`
	State                   string   `json:"State"`
	RunTime                 int64    `json:"RunTime"` // nanoseconds
	Failure                 struct {
		Message string `json:"Message"`
	} `json:"Failure"`
}

func (s specReport) name() string {
	parts := append(append([]string(nil), s.ContainerHierarchyTexts...), s.LeafNodeText)
	var kept []string
	for _, p := range parts {
		if p != "" {
			kept = append(kept, p)
		}
	}
	return strings.Join(kept, " ")
}

// failure is one test that did not pass, with the first line of why.
type failure struct {
	Name, State, Reason string
}

// summary counts the tests e2e.test selected: passed, failed, and skipped
// while running (a skipper deciding the cluster lacks something). Tests the
// focus left out are counted apart, as notSelected.
type summary struct {
	passed      []string
	failed      []failure
	skipped     []failure
	notSelected int
	// suiteFailures are failed setup nodes (BeforeSuite and the like).
	suiteFailures []failure
}

func (s summary) ran() int { return len(s.passed) + len(s.failed) }

func readReport(path string) (summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return summary{}, err
	}
	defer f.Close()
	return parseReport(f)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	const max = 200
	if len(s) > max {
		s = s[:max] + "..."
	}
	return s
}

func parseReport(r io.Reader) (summary, error) {
	var reports []ginkgoReport
	if err := json.NewDecoder(r).Decode(&reports); err != nil {
		return summary{}, fmt.Errorf("ginkgo JSON report: %w", err)
	}
	if len(reports) == 0 {
		return summary{}, fmt.Errorf("ginkgo JSON report: no suite")
	}
	var s summary
	for _, rep := range reports {
		for _, sp := range rep.SpecReports {
			f := failure{Name: sp.name(), State: sp.State, Reason: firstLine(sp.Failure.Message)}
			if sp.LeafNodeType != "It" {
				// Suite-level nodes: only their failures matter.
				if sp.State != "passed" && sp.State != "skipped" && sp.State != "" {
					if f.Name == "" {
						f.Name = sp.LeafNodeType
					}
					s.suiteFailures = append(s.suiteFailures, f)
				}
				continue
			}
			switch sp.State {
			case "passed":
				s.passed = append(s.passed, f.Name)
			case "skipped", "pending":
				// A test the focus or skip left out has no message; one a
				// skipper stopped while running says why.
				if sp.Failure.Message == "" {
					s.notSelected++
				} else {
					s.skipped = append(s.skipped, f)
				}
			case "failed", "panicked", "timedout", "interrupted", "aborted":
				s.failed = append(s.failed, f)
			default:
				return summary{}, fmt.Errorf("ginkgo JSON report: spec %q has unknown state %q", f.Name, sp.State)
			}
		}
	}
	sort.Strings(s.passed)
	for _, l := range [][]failure{s.failed, s.skipped} {
		sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name })
	}
	return s, nil
}

func (s summary) text(elapsed time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "conformance: %d passed, %d failed, %d skipped while running (of %d run; %d not selected) in %s\n",
		len(s.passed), len(s.failed), len(s.skipped), s.ran(), s.notSelected, elapsed)
	for _, f := range s.suiteFailures {
		fmt.Fprintf(&b, "SUITE %s %s: %s\n", strings.ToUpper(f.State), f.Name, f.Reason)
	}
	for _, f := range s.failed {
		fmt.Fprintf(&b, "FAIL %s\n     %s: %s\n", f.Name, f.State, f.Reason)
	}
	for _, f := range s.skipped {
		fmt.Fprintf(&b, "SKIP %s\n     %s\n", f.Name, f.Reason)
	}
	for _, p := range s.passed {
		fmt.Fprintf(&b, "PASS %s\n", p)
	}
	return b.String()
}

func (s summary) print(w io.Writer, elapsed time.Duration) {
	fmt.Fprint(w, s.text(elapsed))
}
