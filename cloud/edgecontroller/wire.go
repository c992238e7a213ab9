package edgecontroller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/edgehive/edgehive/sdk"
)

var everything = labels.Everything()

// objectResp is KubeEdge's answer to writes and lease queries: capitalised
// keys, Err an API error ({"ErrStatus":{..}}) or null.
type objectResp struct {
	Object json.RawMessage `json:"Object"`
	Err    *apierrors.StatusError
}

// MarshalJSON writes the keys KubeEdge writes, Err null when there is none.
func (r objectResp) MarshalJSON() ([]byte, error) {
	obj := r.Object
	if len(obj) == 0 {
		obj = json.RawMessage("null")
	}
	var errJSON json.RawMessage = json.RawMessage("null")
	if r.Err != nil {
		b, err := json.Marshal(r.Err)
		if err != nil {
			return nil, err
		}
		errJSON = b
	}
	return json.Marshal(struct {
		Object json.RawMessage `json:"Object"`
		Err    json.RawMessage `json:"Err"`
	}{obj, errJSON})
}

// statusError turns any error into an API error, so the edge always gets a
// reason and a message ({"ErrStatus":..}); KubeEdge writes plain Go errors
// as {}, which tells the edge nothing.
func statusError(err error) *apierrors.StatusError {
	if err == nil {
		return nil
	}
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return &apierrors.StatusError{ErrStatus: st.Status()}
	}
	return apierrors.NewInternalError(err)
}

func badRequest(format string, args ...any) *apierrors.StatusError {
	return apierrors.NewBadRequest(fmt.Sprintf(format, args...))
}

// forbidden is the answer to a node writing or reading what is not its own.
func forbidden(resource, name, format string, args ...any) *apierrors.StatusError {
	return apierrors.NewForbidden(schema.GroupResource{Resource: resource}, name, fmt.Errorf(format, args...))
}

// respond answers req on node: op response, parent id req's id, source
// edgecontroller, group resource and the request's resource, as KubeEdge's
// edgecontroller answers (the edge routes answers by group "resource" and
// parent id). rv, when set, asks the node for an ACK; KubeEdge sets it only
// on configMap and secret query answers, whose ACKs both edges send.
func (c *Controller) respond(ctx context.Context, node string, req *sdk.Message, content json.RawMessage, rv string) {
	resp := sdk.NewMessage(req.Header.ID).BuildRouter(ModuleName, sdk.WireGroupResource, req.Router.Resource, sdk.OpResponse)
	resp.Header.ResourceVersion = rv
	resp.Content = content
	if err := c.send(ctx, node, resp); err != nil {
		c.log.Warn("answer not sent", "node", node, "request", req.String(), "error", err)
	}
}

// respondObject answers with an ObjectResp.
func (c *Controller) respondObject(ctx context.Context, node string, req *sdk.Message, obj runtime.Object, err error) {
	resp := objectResp{Err: statusError(err)}
	if obj != nil && err == nil {
		b, encErr := wireObject(obj)
		if encErr != nil {
			resp.Err = statusError(encErr)
		} else {
			resp.Object = b
		}
	}
	b, mErr := json.Marshal(resp)
	if mErr != nil {
		c.log.Error("answer not encoded", "node", node, "request", req.String(), "error", mErr)
		return
	}
	c.respond(ctx, node, req, b, "")
}

// respondOK answers with "OK", or with the error when err is set.
func (c *Controller) respondOK(ctx context.Context, node string, req *sdk.Message, err error) {
	if err != nil {
		c.respondError(ctx, node, req, err)
		return
	}
	c.respond(ctx, node, req, json.RawMessage(`"OK"`), "")
}

// respondError answers with the API error as content ({"ErrStatus":..}).
func (c *Controller) respondError(ctx context.Context, node string, req *sdk.Message, err error) {
	b, mErr := json.Marshal(statusError(err))
	if mErr != nil {
		c.log.Error("answer not encoded", "node", node, "request", req.String(), "error", mErr)
		return
	}
	c.respond(ctx, node, req, b, "")
}

// contentBytes is the content as the JSON document it carries: a JSON
// string's value (KubeEdge sends patches that way, and accepts objects either
// way), else the content itself. Empty or null gives nil.
func contentBytes(msg *sdk.Message) []byte {
	c := bytes.TrimSpace(msg.Content)
	if len(c) == 0 || bytes.Equal(c, []byte("null")) {
		return nil
	}
	if c[0] == '"' {
		var s string
		if json.Unmarshal(c, &s) == nil {
			return bytes.TrimSpace([]byte(s))
		}
	}
	return c
}

// decodeObject decodes the content into obj; it must be a JSON object.
func decodeObject(msg *sdk.Message, obj any) error {
	b := contentBytes(msg)
	if len(b) == 0 || b[0] != '{' {
		return badRequest("content of %s is not a JSON object", msg.Router.Resource)
	}
	if err := json.Unmarshal(b, obj); err != nil {
		return badRequest("content of %s: %v", msg.Router.Resource, err)
	}
	return nil
}
