package metamanager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/edgehive/edgehive/plugins/metamanager/metaserver"
	"github.com/edgehive/edgehive/plugins/metamanager/store"
	"github.com/edgehive/edgehive/sdk"
)

// Modules metamanager talks to.
const (
	ModuleEdged   = "edged"
	ModuleEdgeHub = "edgehub"
)

// The cloud-link event edgehub broadcasts to group meta on every change (as
// KubeEdge's edgehub does): resource "node/connection", operation "connect",
// content "cloud_connected" or "cloud_disconnected". The content decides; an
// operation "disconnect" with any other content also means disconnected.
const (
	ResourceConnection = "node/connection"
	OpConnect          = "connect"
	OpDisconnect       = "disconnect"
	CloudConnected     = "cloud_connected"
	CloudDisconnected  = "cloud_disconnected"
)

// ResourceCACert is the cluster CA query; it has no namespace and is never stored.
const ResourceCACert = "k8s/ca.crt"

// upstreamSources are the modules on the node whose requests metamanager
// passes to the cloud: edgehive's module names and KubeEdge's. edgehub
// ("websocket" in KubeEdge) is not one of them: what it delivers came from the
// cloud, and sending it back would loop.
var upstreamSources = []string{
	"edged", "eventbus", "devicetwin", "servicebus",
	"twin", "bus", "metaserver", "edgestream", "taskmanager",
}

// localSources never send cloud objects: a message from one of them that is
// not a query, an answer or a connection event is refused.
var localSources = []string{"edgehub", "websocket", "metamanager"}

// edgedTypes are the resource types edged consumes; downstream changes to
// them are forwarded to edged after they are stored.
var edgedTypes = []string{
	sdk.ResourcePod, sdk.ResourceConfigMap, sdk.ResourceSecret, sdk.ResourceNode,
	"persistentvolume", "persistentvolumeclaim", "volumeattachment", "serviceaccounttoken",
}

// remoteTypes are asked of the cloud whenever it is connected, even when a
// copy is stored, as KubeEdge does; other types are served from the store and
// asked of the cloud only when missing.
var remoteTypes = []string{
	sdk.ResourceConfigMap, sdk.ResourceSecret, sdk.ResourceNode, sdk.ResourceLease,
	sdk.ResourceService, sdk.ResourceEndpoints,
	"persistentvolume", "persistentvolumeclaim", "volumeattachment", "serviceaccounttoken",
	"certificatesigningrequest",
}

// Handle processes one message; see README.md for the table.
func (m *MetaManager) Handle(ctx context.Context, msg *sdk.Message) error {
	if m.store == nil {
		return fmt.Errorf("%s: message %s arrived before Start", Name, msg.Header.ID)
	}
	r := msg.Router
	var err error
	switch {
	case r.Resource == ResourceConnection:
		err = m.handleConnection(msg)
	case r.Operation == sdk.OpResponse || r.Operation == sdk.OpError:
		// An answer nobody waits for any more (its SendSync timed out).
		m.logger.Debug("dropping an answer nobody waits for", "msg", msg.String())
		return nil
	case r.Operation == sdk.OpQuery:
		err = m.handleQuery(ctx, msg)
	case slices.Contains(upstreamSources, r.Source):
		err = m.handleUpstream(ctx, msg)
	case r.Group == sdk.WireGroupResource && !slices.Contains(localSources, r.Source):
		err = m.handleDownstream(ctx, msg)
	default:
		err = fmt.Errorf("%s: %s: not a message metamanager handles (group %q)", Name, msg, r.Group)
		if msg.Header.Sync { // do not leave the caller waiting
			err = errors.Join(err, m.replyError(ctx, msg, err))
		}
	}
	if err != nil {
		m.logger.Error("message failed", "msg", msg.String(), "error", err)
	}
	return err
}

func (m *MetaManager) handleConnection(msg *sdk.Message) error {
	var up bool
	switch content := msg.ContentString(); {
	case content == CloudConnected:
		up = true
	case content == CloudDisconnected:
		up = false
	case msg.Router.Operation == OpConnect:
		up = true
	case msg.Router.Operation == OpDisconnect:
		up = false
	default:
		return fmt.Errorf("%s: %s: want content %q or %q", Name, msg, CloudConnected, CloudDisconnected)
	}
	if was := m.connected.Swap(up); was != up {
		m.logger.Info("cloud link changed", "connected", up)
	}
	return nil
}

// --- downstream: the cloud's objects -----------------------------------------

func (m *MetaManager) handleDownstream(ctx context.Context, msg *sdk.Message) error {
	res, err := sdk.ParseResource(msg.Router.Resource)
	if err != nil {
		return fmt.Errorf("%s: %s: %w", Name, msg, err)
	}
	if res.IsList() {
		return fmt.Errorf("%s: %s: %s on a list resource", Name, msg, msg.Router.Operation)
	}
	key := res.String()
	forward := true
	switch op := msg.Router.Operation; op {
	case sdk.OpInsert, sdk.OpUpdate, sdk.OpPatch:
		if op == sdk.OpPatch && !strings.HasSuffix(res.Type, "patch") {
			// Applying a patch needs the object's schema (strategic merge);
			// storing the patch in place of the object would corrupt it.
			return fmt.Errorf("%s: %s: patch on %s from the cloud is not supported", Name, msg, res.Type)
		}
		obj, err := objectContent(msg)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", Name, msg, err)
		}
		rv := msg.Header.ResourceVersion
		if rv == "" {
			rv = metaString(obj, "resourceVersion")
		}
		result, err := m.store.Save(ctx, key, res.Type, rv, obj)
		if err != nil {
			return fmt.Errorf("%s: %s: not acknowledged: %w", Name, msg, err)
		}
		m.published(ctx, result, key, obj)
		if result == store.Stale {
			// A newer version is stored (and was given to edged): do not
			// hand edged an older one, but acknowledge, so the cloud stops
			// resending what the node has already moved past.
			forward = false
		}
		m.logger.Debug("stored", "key", key, "rv", rv, "result", result.String())
	case sdk.OpDelete:
		forward, err = m.deleteObject(ctx, res, msg)
		if err != nil {
			return fmt.Errorf("%s: %s: not acknowledged: %w", Name, msg, err)
		}
	default:
		return fmt.Errorf("%s: %s: operation %q from the cloud is not supported", Name, msg, op)
	}

	var fwdErr error
	if forward && slices.Contains(edgedTypes, res.Type) {
		if err := m.host.Send(ctx, ModuleEdged, msg.Clone()); err != nil {
			// Stored all the same: edged gets it with its next list.
			fwdErr = fmt.Errorf("%s: %s: stored, but not forwarded to edged: %w", Name, msg, err)
		}
	}
	// Deletes are acknowledged even without a resourceVersion: the cloud's
	// resync sends vanished objects as delete stubs without one and waits.
	if msg.Header.ResourceVersion != "" || msg.Router.Operation == sdk.OpDelete {
		if err := m.host.Send(ctx, ModuleEdgeHub, sdk.NewAck(msg)); err != nil {
			return errors.Join(fwdErr, fmt.Errorf("%s: %s: stored, but the ack failed: %w", Name, msg, err))
		}
	}
	return fwdErr
}

// deleteObject removes the object at res unless the stored one has another
// UID than the delete names (the name was reused by a newer object). For a
// pod its podpatch goes too. It reports whether edged should be told.
func (m *MetaManager) deleteObject(ctx context.Context, res sdk.Resource, msg *sdk.Message) (bool, error) {
	key := res.String()
	uid := deleteUID(msg)
	stored, err := m.store.Get(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		// Nothing stored; edged may still hold it.
		return true, nil
	case err != nil:
		return false, err
	}
	if storedUID := metaString(stored.Value, "uid"); uid != "" && storedUID != "" && uid != storedUID {
		m.logger.Info("delete names another object than the one stored; kept", "key", key, "uid", uid, "stored_uid", storedUID)
		return false, nil
	}
	deleted, err := m.store.Delete(ctx, key)
	if err != nil {
		return false, err
	}
	if deleted {
		m.publish(ctx, metaserver.Deleted, key, stored.Value)
	}
	if res.Type == sdk.ResourcePod {
		for _, typ := range []string{sdk.ResourcePodPatch, resourceLocalPodStatus} {
			if _, err := m.store.Delete(ctx, sdk.BuildResource(res.Namespace, typ, res.Name)); err != nil {
				return false, err
			}
		}
	}
	return true, nil
}

// --- upstream: edged's reports and requests to the cloud ------------------------

func (m *MetaManager) handleUpstream(ctx context.Context, msg *sdk.Message) error {
	if msg.Router.Resource == "" {
		err := fmt.Errorf("%s: %s: no resource", Name, msg)
		if msg.Header.Sync {
			err = errors.Join(err, m.replyError(ctx, msg, err))
		}
		return err
	}
	if res, err := sdk.ParseResource(msg.Router.Resource); err == nil && !res.IsList() {
		// For the MetaServer only; the cloud gets the message whatever happens here.
		var rerr error
		switch op := msg.Router.Operation; {
		case op == sdk.OpPatch && res.Type == sdk.ResourcePodPatch:
			rerr = m.recordPodStatus(ctx, res, msg)
		case op == sdk.OpPatch && res.Type == sdk.ResourceNodePatch,
			(op == sdk.OpInsert || op == sdk.OpUpdate) && res.Type == sdk.ResourceNode:
			rerr = m.recordNode(ctx, res, msg)
		}
		if rerr != nil {
			m.logger.Warn("not recorded for the MetaServer", "msg", msg.String(), "error", rerr)
		}
	}
	if !msg.Header.Sync {
		fwd := msg.Clone()
		if err := m.host.Send(ctx, ModuleEdgeHub, fwd); err != nil {
			return fmt.Errorf("%s: %s: forward to %s: %w", Name, msg, ModuleEdgeHub, err)
		}
		return nil
	}
	req := msg.Clone()
	return m.background(ctx, func(ctx context.Context) {
		resp, err := m.askCloud(ctx, req)
		if err == nil {
			var answer *sdk.Message
			if answer, err = passThrough(req, resp); err == nil {
				err = m.reply(ctx, req, answer)
			}
		}
		if err != nil {
			m.logger.Error("sync upstream request failed", "msg", req.String(), "error", err)
			if rerr := m.replyError(ctx, req, err); rerr != nil {
				m.logger.Error("error answer failed", "msg", req.String(), "error", rerr)
			}
		}
	})
}

// askCloud sends a copy of req, under a new id, to edgehub and waits for the
// cloud's answer up to remote_query_timeout. The copy needs its own id: the
// requester already waits on req's.
func (m *MetaManager) askCloud(ctx context.Context, req *sdk.Message) (*sdk.Message, error) {
	fwd := sdk.NewMessage("")
	fwd.Header.ResourceVersion = req.Header.ResourceVersion
	fwd.Router = req.Router
	fwd.Content = req.Content
	ctx, cancel := context.WithTimeout(ctx, m.cfg.RemoteQueryTimeout.D())
	defer cancel()
	resp, err := m.host.SendSync(ctx, ModuleEdgeHub, fwd)
	if err != nil {
		return nil, fmt.Errorf("ask the cloud: %w", err)
	}
	return resp, nil
}

// passThrough answers req with the cloud's answer: its operation, content and
// resourceVersion, under a fresh id whose parent is req.
func passThrough(req, cloud *sdk.Message) (*sdk.Message, error) {
	var content any // nil: no content
	if len(cloud.Content) > 0 {
		content = json.RawMessage(cloud.Content)
	}
	answer, err := sdk.NewResponse(req, content)
	if err != nil {
		return nil, err
	}
	if cloud.Router.Operation == sdk.OpError {
		answer.Router.Operation = sdk.OpError
	}
	answer.Header.ResourceVersion = cloud.Header.ResourceVersion
	return answer, nil
}

// reply delivers answer to whoever sent req: to its SendSync when req is
// sync, else as a message to req's source module (KubeEdge's SendResp).
func (m *MetaManager) reply(ctx context.Context, req, answer *sdk.Message) error {
	if req.Header.Sync {
		return m.host.Response(ctx, answer)
	}
	if req.Router.Source == "" {
		return fmt.Errorf("%s: %s: no source to answer", Name, req)
	}
	return m.host.Send(ctx, req.Router.Source, answer)
}

// --- queries ----------------------------------------------------------------

func (m *MetaManager) handleQuery(ctx context.Context, msg *sdk.Message) error {
	if msg.Router.Resource == ResourceCACert {
		if !m.connected.Load() {
			return m.replyError(ctx, msg, fmt.Errorf("%s is only known to the cloud, which is disconnected", ResourceCACert))
		}
		return m.remoteQuery(ctx, msg, sdk.Resource{})
	}
	res, err := sdk.ParseResource(msg.Router.Resource)
	if err != nil {
		err = fmt.Errorf("%s: %s: %w", Name, msg, err)
		return errors.Join(err, m.replyError(ctx, msg, err))
	}
	if res.IsList() {
		return m.localList(ctx, msg, res)
	}
	online := m.connected.Load()
	if online && slices.Contains(remoteTypes, res.Type) {
		return m.remoteQuery(ctx, msg, res)
	}
	obj, err := m.store.Get(ctx, res.String())
	switch {
	case err == nil:
		return m.replyObject(ctx, msg, obj)
	case errors.Is(err, store.ErrNotFound) && online:
		return m.remoteQuery(ctx, msg, res)
	case errors.Is(err, store.ErrNotFound):
		return m.replyError(ctx, msg, fmt.Errorf("%s not found in the local store, and the cloud is disconnected", res))
	default:
		return errors.Join(err, m.replyError(ctx, msg, err))
	}
}

// localList answers a list query ("<ns>/<type>") from the store as a JSON
// array of the stored objects. A pod list covers every namespace: edged asks
// "default/pod" for all its pods at start (KubeEdge's pod list query).
func (m *MetaManager) localList(ctx context.Context, msg *sdk.Message, res sdk.Resource) error {
	ns := res.Namespace
	if res.Type == sdk.ResourcePod {
		ns = ""
	}
	objs, err := m.store.List(ctx, res.Type, ns)
	if err != nil {
		return errors.Join(err, m.replyError(ctx, msg, err))
	}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, o := range objs {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(o.Value)
	}
	buf.WriteByte(']')
	answer, err := sdk.NewResponse(msg, json.RawMessage(buf.Bytes()))
	if err != nil {
		return err
	}
	return m.reply(ctx, msg, answer)
}

func (m *MetaManager) replyObject(ctx context.Context, msg *sdk.Message, obj store.Object) error {
	answer, err := sdk.NewResponse(msg, obj.Value)
	if err != nil {
		return err
	}
	answer.Header.ResourceVersion = obj.ResourceVersion
	return m.reply(ctx, msg, answer)
}

// replyError answers msg with an error message giving cause; it returns only
// a failure to deliver that answer.
func (m *MetaManager) replyError(ctx context.Context, msg *sdk.Message, cause error) error {
	if err := m.reply(ctx, msg, sdk.NewErrorResponse(msg, cause)); err != nil {
		return fmt.Errorf("%s: answer %s with an error: %w", Name, msg, err)
	}
	return nil
}

// remoteQuery asks the cloud in the background. A cloud answer is stored
// (and acknowledged when it carries a resourceVersion) and passed to the
// requester as it came; when the cloud cannot be asked or does not answer in
// time, the stored copy is the answer.
func (m *MetaManager) remoteQuery(ctx context.Context, msg *sdk.Message, res sdk.Resource) error {
	req := msg.Clone()
	return m.background(ctx, func(ctx context.Context) {
		if err := m.doRemoteQuery(ctx, req, res); err != nil {
			m.logger.Error("query failed", "msg", req.String(), "error", err)
		}
	})
}

func (m *MetaManager) doRemoteQuery(ctx context.Context, req *sdk.Message, res sdk.Resource) error {
	resp, askErr := m.askCloud(ctx, req)
	if askErr != nil {
		if res.Type == "" { // not storable, so nothing to fall back on
			return errors.Join(askErr, m.replyError(ctx, req, askErr))
		}
		obj, err := m.store.Get(ctx, res.String())
		if err != nil {
			err = fmt.Errorf("%s: the cloud did not answer (%v), and the local store has no copy (%v)", res, askErr, err)
			return errors.Join(err, m.replyError(ctx, req, err))
		}
		m.logger.Warn("the cloud did not answer a query; answering from the local store", "key", res.String(), "error", askErr)
		return m.replyObject(ctx, req, obj)
	}
	ans := readCloudAnswer(resp)
	switch {
	case ans.errText != "":
		// The cloud's refusal (NotFound, Forbidden, ...) is the answer: it
		// knows better than a stored copy. Nothing is stored or acked.
		return m.replyError(ctx, req, fmt.Errorf("cloud: %s", ans.errText))
	case ans.obj == nil:
		// Not one object ("OK", a list, the CA's PEM string): as it came.
		answer, err := passThrough(req, resp)
		if err != nil {
			return errors.Join(err, m.replyError(ctx, req, err))
		}
		return m.reply(ctx, req, answer)
	}
	rv := resp.Header.ResourceVersion
	if rv == "" {
		rv = metaString(ans.obj, "resourceVersion")
	}
	var ackErr error
	if res.Type != "" {
		result, err := m.store.Save(ctx, res.String(), res.Type, rv, ans.obj)
		switch {
		case err != nil:
			ackErr = fmt.Errorf("store the cloud's answer: %w", err)
		case resp.Header.ResourceVersion != "":
			if err := m.host.Send(ctx, ModuleEdgeHub, sdk.NewAck(resp)); err != nil {
				ackErr = fmt.Errorf("ack the cloud's answer: %w", err)
			}
		}
		if err == nil {
			m.published(ctx, result, res.String(), ans.obj)
		}
	}
	answer, err := sdk.NewResponse(req, ans.obj)
	if err != nil {
		return errors.Join(ackErr, m.replyError(ctx, req, err))
	}
	answer.Header.ResourceVersion = rv
	return errors.Join(ackErr, m.reply(ctx, req, answer))
}

// published tells the MetaServer about a Save that changed the store.
func (m *MetaManager) published(ctx context.Context, result store.Result, key string, value json.RawMessage) {
	switch result {
	case store.Inserted:
		m.publish(ctx, metaserver.Added, key, value)
	case store.Updated:
		m.publish(ctx, metaserver.Modified, key, value)
	}
}

// --- content helpers ------------------------------------------------------------

// objectContent returns the content as a JSON object. A JSON string holding an
// object (KubeEdge's receivers accept both) is unwrapped.
func objectContent(msg *sdk.Message) (json.RawMessage, error) {
	c := bytes.TrimSpace(msg.Content)
	if len(c) > 0 && c[0] == '"' {
		var inner string
		if json.Unmarshal(c, &inner) == nil {
			c = bytes.TrimSpace([]byte(inner))
		}
	}
	if len(c) == 0 || c[0] != '{' || !json.Valid(c) {
		return nil, fmt.Errorf("content is not a JSON object")
	}
	return json.RawMessage(c), nil
}

// cloudAnswer is what a cloud answer to a query for one object says.
type cloudAnswer struct {
	obj     json.RawMessage // the object, when the answer holds one
	errText string          // the cloud's error, when it refused
}

// readCloudAnswer reads the shapes the cloud answers a query with: the
// object itself, a JSON string holding it, KubeEdge's ObjectResp
// {"Object":..,"Err":..} (Err checked first: Object may be a non-null empty
// object beside it), a Kubernetes API error {"ErrStatus":{..}} (cloudcore
// sends those with operation "response"), a one-element array (KubeEdge's
// list answers, of objects or of JSON strings), or an operation "error".
// Anything else ("OK", a longer list, the CA's PEM) gives neither.
func readCloudAnswer(resp *sdk.Message) cloudAnswer {
	if resp.Router.Operation == sdk.OpError {
		text := strings.TrimSpace(resp.ContentString())
		if status := statusText(json.RawMessage(text)); status != "" {
			text = status
		}
		if text == "" {
			text = "error without a message"
		}
		return cloudAnswer{errText: text}
	}
	return readAnswerValue(bytes.TrimSpace(resp.Content), 0)
}

func readAnswerValue(c []byte, depth int) cloudAnswer {
	if len(c) == 0 || depth > 2 {
		return cloudAnswer{}
	}
	switch c[0] {
	case '"':
		var inner string
		if json.Unmarshal(c, &inner) != nil {
			return cloudAnswer{}
		}
		inner = strings.TrimSpace(inner)
		if inner == "" || (inner[0] != '{' && inner[0] != '[') {
			return cloudAnswer{}
		}
		return readAnswerValue([]byte(inner), depth+1)
	case '[':
		var items []json.RawMessage
		if json.Unmarshal(c, &items) != nil {
			return cloudAnswer{}
		}
		switch len(items) {
		case 0:
			return cloudAnswer{errText: "not found (the cloud answered an empty list)"}
		case 1:
			return readAnswerValue(bytes.TrimSpace(items[0]), depth+1)
		}
		return cloudAnswer{}
	case '{':
	default:
		return cloudAnswer{}
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(c, &fields) != nil {
		return cloudAnswer{}
	}
	if _, isErr := fields["ErrStatus"]; isErr {
		return cloudAnswer{errText: statusText(c)}
	}
	obj, hasObj := fields["Object"]
	errField, hasErr := fields["Err"]
	if !hasObj && !hasErr {
		return cloudAnswer{obj: json.RawMessage(c)}
	}
	if errField = bytes.TrimSpace(errField); hasErr && len(errField) > 0 && string(errField) != "null" {
		text := statusText(errField)
		if text == "" {
			text = string(errField)
		}
		return cloudAnswer{errText: text}
	}
	obj = bytes.TrimSpace(obj)
	if len(obj) == 0 || obj[0] != '{' {
		return cloudAnswer{errText: "the cloud answered without an object"}
	}
	return cloudAnswer{obj: obj}
}

// statusText is the message of a Kubernetes API error {"ErrStatus":{...}}
// (or of a bare Status), with its reason; "" when it is not one.
func statusText(c json.RawMessage) string {
	var wrapped struct {
		ErrStatus *struct {
			Message string `json:"message"`
			Reason  string `json:"reason"`
			Code    int    `json:"code"`
		} `json:"ErrStatus"`
	}
	if json.Unmarshal(c, &wrapped) != nil || wrapped.ErrStatus == nil {
		return ""
	}
	st := wrapped.ErrStatus
	switch {
	case st.Message != "" && st.Reason != "":
		return fmt.Sprintf("%s (%s, %d)", st.Message, st.Reason, st.Code)
	case st.Message != "":
		return st.Message
	case st.Reason != "":
		return fmt.Sprintf("%s (%d)", st.Reason, st.Code)
	}
	return fmt.Sprintf("API error %d", st.Code)
}

// metaString reads metadata.<field> of an object, or "".
func metaString(obj json.RawMessage, field string) string {
	var o struct {
		Metadata map[string]json.RawMessage `json:"metadata"`
	}
	if json.Unmarshal(obj, &o) != nil {
		return ""
	}
	var s string
	_ = json.Unmarshal(o.Metadata[field], &s)
	return s
}

// deleteUID is the UID a delete names: the object's (or stub's)
// metadata.uid, DeleteOptions' preconditions.uid, or a bare string (legacy).
func deleteUID(msg *sdk.Message) string {
	c := bytes.TrimSpace(msg.Content)
	if len(c) == 0 {
		return ""
	}
	if c[0] == '"' {
		var s string
		if json.Unmarshal(c, &s) == nil && !strings.HasPrefix(strings.TrimSpace(s), "{") {
			return s
		}
	}
	obj, err := objectContent(msg)
	if err != nil {
		return ""
	}
	if uid := metaString(obj, "uid"); uid != "" {
		return uid
	}
	var opts struct {
		Preconditions struct {
			UID string `json:"uid"`
		} `json:"preconditions"`
	}
	_ = json.Unmarshal(obj, &opts)
	return opts.Preconditions.UID
}
