package main

import (
	"context"
	"errors"
	"testing"

	"github.com/edgehive/edgehive/sdk"
	"github.com/edgehive/edgehive/sdk/sdktest"
)

func greet(source, name string, sync bool) *sdk.Message {
	m := sdk.NewMessage("").BuildRouter(source, sdk.GroupUser, "default/greeting/"+name, OpGreet)
	m.Header.Sync = sync
	if err := m.FillBody(GreetRequest{Name: name}); err != nil {
		panic(err)
	}
	return m
}

func TestGreet(t *testing.T) {
	tests := []struct {
		name     string
		config   string
		msg      *sdk.Message
		wantKind string // "" means nothing is sent
		wantTo   string // module or group; for a response, filled with the message id
		wantOp   string
		want     string // greeting in the content
	}{
		{"sync is answered", `{}`, greet("app", "x", true), sdktest.KindResponse, "", sdk.OpResponse, "hello, x"},
		{"configured greeting", `{"greeting":"hi"}`, greet("app", "ada", true), sdktest.KindResponse, "", sdk.OpResponse, "hi, ada"},
		{"async goes to the sender", `{}`, greet("app", "x", false), sdktest.KindModule, "app", OpGreeted, "hello, x"},
		{"async goes to reply_to_group", `{"reply_to_group":"user"}`, greet("app", "x", false), sdktest.KindGroup, "user", OpGreeted, "hello, x"},
		{"other operations are ignored", `{}`, sdk.NewMessage("").BuildRouter("app", "user", "r", sdk.OpInsert), "", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := sdktest.New(t, &Hello{}, sdktest.Options{NodeName: "n1", ConfigJSON: tt.config})
			if err := h.Deliver(tt.msg); err != nil {
				t.Fatalf("Deliver: %v", err)
			}
			sent := h.Sent()
			if tt.wantKind == "" {
				if len(sent) != 0 {
					t.Fatalf("sent %+v", sent)
				}
				return
			}
			if len(sent) != 1 {
				t.Fatalf("sent %d messages, want 1: %+v", len(sent), sent)
			}
			to := tt.wantTo
			if tt.wantKind == sdktest.KindResponse {
				to = tt.msg.Header.ID
			}
			got := sent[0]
			if got.Kind != tt.wantKind || got.Target != to || got.Message.Router.Operation != tt.wantOp {
				t.Fatalf("sent %s to %s: %s", got.Kind, got.Target, got.Message)
			}
			if got.Message.Header.ParentID != tt.msg.Header.ID {
				t.Fatalf("parent id %q, want %q", got.Message.Header.ParentID, tt.msg.Header.ID)
			}
			var reply GreetReply
			if err := got.Message.DecodeContent(&reply); err != nil {
				t.Fatal(err)
			}
			if reply.Greeting != tt.want {
				t.Fatalf("greeting %q, want %q", reply.Greeting, tt.want)
			}
		})
	}
}

func TestRedeliveryGreetsOnce(t *testing.T) {
	h := sdktest.New(t, &Hello{}, sdktest.Options{})
	m := greet("app", "x", false)
	for range 3 {
		if err := h.Deliver(m); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(h.Sent()); n != 1 {
		t.Fatalf("sent %d greetings for one message", n)
	}
}

func TestBadGreet(t *testing.T) {
	h := sdktest.New(t, &Hello{}, sdktest.Options{})
	noName := sdk.NewMessage("").BuildRouter("app", "user", "r", OpGreet)
	if err := h.Deliver(noName); err == nil {
		t.Fatal("an async greet without a name was accepted")
	}
	syncNoName := noName.Clone()
	syncNoName.Header.ID = "sync-no-name"
	syncNoName.Header.Sync = true
	if err := h.Deliver(syncNoName); err != nil {
		t.Fatal(err)
	}
	got, ok := h.WaitSent(context.Background(), sdktest.ResponseTo("sync-no-name"))
	if !ok || got.Message.Router.Operation != sdk.OpError {
		t.Fatalf("want an error response, got %+v", got)
	}
}

func TestSendFails(t *testing.T) {
	h := sdktest.New(t, &Hello{}, sdktest.Options{})
	h.FailSendsTo("app", sdk.ErrQueueFull)
	if err := h.Deliver(greet("app", "x", false)); !errors.Is(err, sdk.ErrQueueFull) {
		t.Fatalf("Deliver = %v, want ErrQueueFull", err)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		config  string
		wantErr bool
	}{
		{`{}`, false},
		{`{"greeting":"hi","reply_to_group":"user"}`, false},
		{`{"greeting":"  "}`, true},
		{`{"greting":"hi"}`, true},
		{`{"greeting":1}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			m := &Hello{}
			cfg, err := sdktest.BuildConfig(m, sdktest.Options{ConfigJSON: tt.config})
			if err == nil {
				err = m.SetConfig(cfg)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

func TestHealth(t *testing.T) {
	if err := (&Hello{}).Health(context.Background()); err == nil {
		t.Fatal("healthy before Start")
	}
	h := sdktest.New(t, &Hello{}, sdktest.Options{})
	if err := h.Health(context.Background()); err != nil {
		t.Fatal(err)
	}
}
