package sdk

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"

	pluginv1 "github.com/edgehive/edgehive/sdk/proto/plugin/v1"
)

// Message is KubeEdge's beehive message. Its JSON form is byte-compatible with
// KubeEdge's model.Message, so it can go to the cloud as it is.
type Message struct {
	Header  MessageHeader   `json:"header"`
	Router  MessageRoute    `json:"route,omitempty"`
	Content json.RawMessage `json:"content"`
}

// MarshalJSON writes an empty content as null, as KubeEdge does for a nil one.
func (m Message) MarshalJSON() ([]byte, error) {
	type plain Message // without this method
	p := plain(m)
	if len(p.Content) == 0 {
		p.Content = nil
	}
	return json.Marshal(p)
}

// MessageHeader carries the identity and correlation of a message.
type MessageHeader struct {
	ID              string `json:"msg_id"`
	ParentID        string `json:"parent_msg_id,omitempty"`
	Timestamp       int64  `json:"timestamp"`
	ResourceVersion string `json:"resourceversion,omitempty"`
	Sync            bool   `json:"sync,omitempty"`
	MessageType     string `json:"type,omitempty"`
}

// MessageRoute says where a message comes from and what it does to which resource.
type MessageRoute struct {
	Source      string `json:"source,omitempty"`
	Destination string `json:"destination,omitempty"`
	Group       string `json:"group,omitempty"`
	Operation   string `json:"operation,omitempty"`
	Resource    string `json:"resource,omitempty"`
}

// Operations used on the wire and between modules.
const (
	OpInsert      = "insert"
	OpUpdate      = "update"
	OpPatch       = "patch"
	OpDelete      = "delete"
	OpQuery       = "query"
	OpResponse    = "response"
	OpError       = "error"
	OpUpload      = "upload"
	OpKeepalive   = "keepalive"
	OpSubscribe   = "subscribe"
	OpUnsubscribe = "unsubscribe"
	OpPublish     = "publish"
	OpMessage     = "message"
)

// Module groups on the edge.
const (
	GroupHub        = "hub"
	GroupMeta       = "meta"
	GroupEdged      = "edged"
	GroupTwin       = "twin"
	GroupBus        = "bus"
	GroupServiceBus = "servicebus"
	GroupUser       = "user"
)

// Groups on the wire between edge and cloud.
const (
	WireGroupResource = "resource"
	WireGroupTwin     = "twin"
	WireGroupFunc     = "func"
	WireGroupUser     = "user"
	WireGroupMeta     = "meta"
)

// AckContent is the content of a delivery acknowledgement sent to the cloud.
const AckContent = "OK"

// NewMessage returns a message with a fresh UUIDv4 id and the current time.
// parentID may be empty.
func NewMessage(parentID string) *Message {
	return &Message{Header: MessageHeader{
		ID:        uuid.NewString(),
		ParentID:  parentID,
		Timestamp: time.Now().UnixMilli(),
	}}
}

// BuildRouter sets the route's source, group, resource and operation.
func (m *Message) BuildRouter(source, group, resource, operation string) *Message {
	m.Router.Source = source
	m.Router.Group = group
	m.Router.Resource = resource
	m.Router.Operation = operation
	return m
}

// FillBody sets the content to the JSON encoding of v. A json.RawMessage or
// []byte holding JSON is used as it is; a string becomes a JSON string.
func (m *Message) FillBody(v any) error {
	raw, err := encodeContent(v)
	if err != nil {
		return fmt.Errorf("message %s: encode content: %w", m.Header.ID, err)
	}
	m.Content = raw
	return nil
}

// DecodeContent unmarshals the content into v. A content that is a JSON string
// holding a JSON document (KubeEdge sends patches and some objects that way) is
// unwrapped first when v is not itself a string.
func (m *Message) DecodeContent(v any) error {
	if len(m.Content) == 0 {
		return fmt.Errorf("message %s: empty content", m.Header.ID)
	}
	err := json.Unmarshal(m.Content, v)
	if err == nil {
		return nil
	}
	var inner string
	if json.Unmarshal(m.Content, &inner) == nil {
		if err2 := json.Unmarshal([]byte(inner), v); err2 == nil {
			return nil
		}
	}
	return fmt.Errorf("message %s: decode content: %w", m.Header.ID, err)
}

// ContentString returns the content as a string: the value of a JSON string,
// or the raw JSON text of anything else.
func (m *Message) ContentString() string {
	var s string
	if json.Unmarshal(m.Content, &s) == nil {
		return s
	}
	return string(m.Content)
}

// IsResponse reports whether the message answers another one.
func (m *Message) IsResponse() bool { return m.Header.ParentID != "" }

// NewResponse builds the answer to req the way KubeEdge does: a fresh id,
// parent id set to req's id, operation "response", source, group and resource
// copied from req, and content from v.
func NewResponse(req *Message, v any) (*Message, error) {
	resp := NewMessage(req.Header.ID)
	resp.Header.ResourceVersion = req.Header.ResourceVersion
	resp.BuildRouter(req.Router.Source, req.Router.Group, req.Router.Resource, OpResponse)
	if err := resp.FillBody(v); err != nil {
		return nil, err
	}
	return resp, nil
}

// NewAck is the acknowledgement KubeEdge expects for a message that carries a
// resource version: a response with content "OK".
func NewAck(req *Message) *Message {
	resp, _ := NewResponse(req, AckContent) // a string always encodes
	return resp
}

// NewErrorResponse answers req with operation "error" and the error text as content.
func NewErrorResponse(req *Message, cause error) *Message {
	resp := NewMessage(req.Header.ID)
	resp.BuildRouter(req.Router.Source, req.Router.Group, req.Router.Resource, OpError)
	text := "unknown error"
	if cause != nil {
		text = cause.Error()
	}
	_ = resp.FillBody(text)
	return resp
}

// Clone returns a deep copy of the message.
func (m *Message) Clone() *Message {
	c := *m
	if m.Content != nil {
		c.Content = append(json.RawMessage(nil), m.Content...)
	}
	return &c
}

// String is a short form for logs.
func (m *Message) String() string {
	return fmt.Sprintf("%s %s %s (id=%s parent=%s)", m.Router.Source, m.Router.Operation, m.Router.Resource, m.Header.ID, m.Header.ParentID)
}

func encodeContent(v any) (json.RawMessage, error) {
	switch c := v.(type) {
	case nil:
		return nil, nil
	case json.RawMessage:
		if !json.Valid(c) {
			return nil, fmt.Errorf("raw content is not valid JSON")
		}
		return c, nil
	case []byte:
		if !json.Valid(c) {
			return nil, fmt.Errorf("raw content is not valid JSON")
		}
		return json.RawMessage(c), nil
	default:
		return json.Marshal(v)
	}
}

// ToProto converts a message into its protobuf envelope. Content bytes are shared, not copied.
func (m *Message) ToProto() *pluginv1.Message {
	return &pluginv1.Message{
		Id:              m.Header.ID,
		ParentId:        m.Header.ParentID,
		Timestamp:       m.Header.Timestamp,
		ResourceVersion: m.Header.ResourceVersion,
		Sync:            m.Header.Sync,
		Type:            m.Header.MessageType,
		Source:          m.Router.Source,
		Destination:     m.Router.Destination,
		Group:           m.Router.Group,
		Operation:       m.Router.Operation,
		Resource:        m.Router.Resource,
		Content:         m.Content,
	}
}

// MessageFromProto converts a protobuf envelope into a message. Content bytes are shared.
func MessageFromProto(p *pluginv1.Message) *Message {
	m := &Message{
		Header: MessageHeader{
			ID:              p.GetId(),
			ParentID:        p.GetParentId(),
			Timestamp:       p.GetTimestamp(),
			ResourceVersion: p.GetResourceVersion(),
			Sync:            p.GetSync(),
			MessageType:     p.GetType(),
		},
		Router: MessageRoute{
			Source:      p.GetSource(),
			Destination: p.GetDestination(),
			Group:       p.GetGroup(),
			Operation:   p.GetOperation(),
			Resource:    p.GetResource(),
		},
	}
	if len(p.GetContent()) > 0 {
		m.Content = json.RawMessage(p.GetContent())
	}
	return m
}

// ValidateEnvelope checks what every message needs before it is routed: an
// id, an operation, and content that is valid JSON when present.
func ValidateEnvelope(p *pluginv1.Message) error {
	if p == nil {
		return fmt.Errorf("message is missing")
	}
	if p.GetId() == "" {
		return fmt.Errorf("message has no msg_id")
	}
	if len(p.GetId()) > 128 {
		return fmt.Errorf("message msg_id is longer than 128 bytes")
	}
	if p.GetOperation() == "" {
		return fmt.Errorf("message %s has no route.operation", p.GetId())
	}
	if c := p.GetContent(); len(c) > 0 && !json.Valid(c) {
		return fmt.Errorf("message %s: content is not valid JSON", p.GetId())
	}
	return nil
}
