package eventbus

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// broker is the embedded MQTT broker of internal mode, listening on the
// configured loopback address (with SO_REUSEPORT, so that a live upgrade can
// start the new instance beside the old one). eventbus itself is its inline
// client: no socket of its own.
type broker struct {
	server *mqtt.Server
	public net.Listener
}

// packetOverhead is what an MQTT PUBLISH may carry besides its payload: the
// topic (at most 65535 bytes plus its length), a packet id and v5 properties.
const packetOverhead = maxTopicBytes + 2 + 2 + 4096

// brokerStore is where the embedded broker keeps its sessions,
// subscriptions, messages in flight and retained messages, so that mappers
// find them again after eventbus restarted (even after a kill -9).
type brokerStore struct {
	file    string
	timeout time.Duration // wait for the file's lock (a live upgrade holds it)
}

func startBroker(listen string, maxPayload, sessionQueue int, logger hclog.Logger, bridge mqtt.Hook, store brokerStore) (*broker, error) {
	lc := net.ListenConfig{Control: reusePort}
	public, err := lc.Listen(context.Background(), "tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen %s: %w", listen, err)
	}

	caps := mqtt.NewDefaultServerCapabilities()
	limit := uint64(maxPayload) + packetOverhead
	if limit > math.MaxUint32 {
		limit = math.MaxUint32
	}
	caps.MaximumPacketSize = uint32(limit)
	// A session keeps at least session_queue_size unacknowledged QoS>0 messages.
	if sessionQueue > int(caps.MaximumInflight) && sessionQueue <= math.MaxUint16 {
		caps.MaximumInflight = uint16(sessionQueue)
	}
	caps.MaximumSessionExpiryInterval = 24 * 60 * 60 // forget a disconnected session after a day

	srv := mqtt.New(&mqtt.Options{
		Capabilities: caps,
		Logger:       newBrokerLogger(logger),
		InlineClient: true, // eventbus publishes with Server.Publish
		// Larger buffers: packets queued for one client leave in one write,
		// and a burst arrives in fewer reads (mochi's defaults are 2 KiB).
		ClientNetWriteBufferSize: 32 << 10,
		ClientNetReadBufferSize:  32 << 10,
	})
	b := &broker{server: srv, public: public}
	if err := srv.AddHook(new(loopbackOnly), nil); err != nil {
		b.closeListeners()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if bridge != nil {
		if err := srv.AddHook(bridge, nil); err != nil {
			b.closeListeners()
			return nil, fmt.Errorf("embedded broker: %w", err)
		}
	}
	if store.file != "" {
		// NoSync: written to the OS before the broker goes on, which survives a
		// killed process; an fsync per message would cap the rate.
		err := srv.AddHook(&keptState{Hook: new(bolt.Hook), stored: map[string]bool{}}, &bolt.Options{Path: store.file, Bucket: "broker",
			Options: &bbolt.Options{Timeout: store.timeout, NoSync: true, NoFreelistSync: true}})
		if err != nil {
			// Another instance holds the file (a live upgrade): serve without
			// keeping state rather than not at all.
			logger.Warn("embedded broker state not kept: its store is unavailable", "file", store.file, "error", err)
		}
	}
	if err := srv.AddListener(listeners.NewNet("public", public)); err != nil {
		b.closeListeners()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.Serve(); err != nil { // Serve starts its loops and returns
		_ = srv.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return b, nil
}

func (b *broker) closeListeners() {
	_ = b.public.Close()
}

// addr is the public address (the real port when listen asked for port 0).
func (b *broker) addr() string { return b.public.Addr().String() }

func (b *broker) close() { _ = b.server.Close() }

func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}

// loopbackOnly admits clients that connect from a loopback address, with any
// credentials, and lets them publish and subscribe to any topic. The listeners
// are bound to loopback already; this is the second lock on the door.
type loopbackOnly struct {
	mqtt.HookBase
}

func (h *loopbackOnly) ID() string { return "edgehive-loopback-only" }

func (h *loopbackOnly) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnConnectAuthenticate, mqtt.OnACLCheck}, []byte{b})
}

func (h *loopbackOnly) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	host, _, err := net.SplitHostPort(cl.Net.Remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (h *loopbackOnly) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// keptState is mochi's bolt storage hook without the writes that protect
// nothing: the broker records every incoming QoS 1 publish as in flight until
// its PUBACK is written, microseconds later, which would cost two bolt
// transactions per message. Entries for messages to subscribers and QoS 2
// handshakes are kept as the hook keeps them.
type keptState struct {
	*bolt.Hook
	mu     sync.Mutex
	stored map[string]bool // in-flight keys in the store
}

func inflightID(cl *mqtt.Client, pk packets.Packet) string {
	return storage.InflightKey + "_" + cl.ID + ":" + pk.FormatID()
}

func (h *keptState) OnQosPublish(cl *mqtt.Client, pk packets.Packet, sent int64, resends int) {
	if pk.FixedHeader.Type == packets.Puback {
		return
	}
	h.mu.Lock()
	h.stored[inflightID(cl, pk)] = true
	h.mu.Unlock()
	h.Hook.OnQosPublish(cl, pk, sent, resends)
}

func (h *keptState) OnQosComplete(cl *mqtt.Client, pk packets.Packet) {
	id := inflightID(cl, pk)
	h.mu.Lock()
	ok := h.stored[id]
	delete(h.stored, id)
	h.mu.Unlock()
	if ok {
		h.Hook.OnQosComplete(cl, pk)
	}
}

func (h *keptState) OnQosDropped(cl *mqtt.Client, pk packets.Packet) { h.OnQosComplete(cl, pk) }

// StoredInflightMessages also learns which keys the store holds.
func (h *keptState) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := h.Hook.StoredInflightMessages()
	h.mu.Lock()
	for _, m := range msgs {
		h.stored[m.ID] = true
	}
	h.mu.Unlock()
	return msgs, err
}
