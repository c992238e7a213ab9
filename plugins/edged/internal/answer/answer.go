// Package answer reads the one object a metamanager query answer holds. The
// answer may come from metamanager's store or be the cloud's, passed on as it
// came, so every shape KubeEdge's cloud uses is accepted: the object, JSON in
// a string, a one-element list, the ObjectResp {"Object":..,"Err":..}, a
// Kubernetes API error {"ErrStatus":{..}}, or an operation "error".
package answer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/edgehive/edgehive/sdk"
)

// ErrNotFound is wrapped by every error saying the object does not exist.
var ErrNotFound = errors.New("not found")

// maxDepth bounds the unwrapping of strings and lists inside one another.
const maxDepth = 3

// APIError is a Kubernetes API error the cloud answered with. It unwraps to
// the apimachinery StatusError, so apierrors.IsForbidden and friends work,
// and matches ErrNotFound when the API said NotFound.
type APIError struct {
	Status *apierrors.StatusError
}

func (e *APIError) Error() string {
	st := e.Status.ErrStatus
	msg := st.Message
	if msg == "" {
		msg = "API error"
	}
	return fmt.Sprintf("cloud: %s (%s, %d)", msg, st.Reason, st.Code)
}

func (e *APIError) Unwrap() error { return e.Status }

// Is makes a NotFound API error match ErrNotFound.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && apierrors.IsNotFound(e.Status)
}

// Decode returns the JSON of the one object resp holds, or why it holds none.
func Decode(resp *sdk.Message) (json.RawMessage, error) {
	if resp.Router.Operation == sdk.OpError {
		return nil, errorAnswer(strings.TrimSpace(resp.ContentString()))
	}
	return value(bytes.TrimSpace(resp.Content), 0)
}

// errorAnswer is the error of an operation "error" answer: an API error
// when its text is one, else the text, matching ErrNotFound when it says
// "not found" (metamanager's own answers are plain text).
func errorAnswer(text string) error {
	if apiErr := apiError([]byte(text)); apiErr != nil {
		return apiErr
	}
	if text == "" {
		text = "error answer without a message"
	}
	if strings.Contains(strings.ToLower(text), "not found") {
		return fmt.Errorf("metamanager: %s: %w", text, ErrNotFound)
	}
	return fmt.Errorf("metamanager: %s", text)
}

func value(c []byte, depth int) (json.RawMessage, error) {
	if len(c) == 0 {
		return nil, errors.New("empty answer")
	}
	if depth > maxDepth {
		return nil, errors.New("answer nested too deep")
	}
	switch c[0] {
	case '"':
		var inner string
		if err := json.Unmarshal(c, &inner); err != nil {
			return nil, fmt.Errorf("answer: %w", err)
		}
		return value(bytes.TrimSpace([]byte(inner)), depth+1)
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(c, &items); err != nil {
			return nil, fmt.Errorf("answer: %w", err)
		}
		switch len(items) {
		case 0:
			return nil, fmt.Errorf("answer is an empty list: %w", ErrNotFound)
		case 1:
			return value(bytes.TrimSpace(items[0]), depth+1)
		}
		return nil, fmt.Errorf("answer lists %d objects, want one", len(items))
	case '{':
	default:
		return nil, fmt.Errorf("answer is not an object: %.40s", c)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(c, &fields); err != nil {
		return nil, fmt.Errorf("answer: %w", err)
	}
	if _, ok := fields["ErrStatus"]; ok {
		if apiErr := apiError(c); apiErr != nil {
			return nil, apiErr
		}
		return nil, fmt.Errorf("cloud: malformed API error: %.200s", c)
	}
	obj, hasObj := fields["Object"]
	errField, hasErr := fields["Err"]
	if !hasObj && !hasErr {
		return json.RawMessage(c), nil
	}
	// ObjectResp: Err first, Object may be a non-null empty object beside it.
	if errField = bytes.TrimSpace(errField); len(errField) > 0 && string(errField) != "null" {
		if apiErr := apiError(errField); apiErr != nil {
			return nil, apiErr
		}
		return nil, fmt.Errorf("cloud: error %.200s", errField)
	}
	obj = bytes.TrimSpace(obj)
	if len(obj) == 0 || obj[0] != '{' {
		return nil, errors.New("cloud answered without an object")
	}
	return json.RawMessage(obj), nil
}

// apiError reads {"ErrStatus":{..}}; nil when c is not one.
func apiError(c []byte) *APIError {
	var wrapped struct {
		ErrStatus *metav1.Status `json:"ErrStatus"`
	}
	if json.Unmarshal(c, &wrapped) != nil || wrapped.ErrStatus == nil {
		return nil
	}
	return &APIError{Status: &apierrors.StatusError{ErrStatus: *wrapped.ErrStatus}}
}
