package answer

import (
	"encoding/json"
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/edgehive/edgehive/sdk"
)

const (
	cm        = `{"metadata":{"name":"cfg"},"data":{"k":"v"}}`
	notFound  = `{"ErrStatus":{"metadata":{},"status":"Failure","message":"configmaps \"cfg\" not found","reason":"NotFound","details":{"name":"cfg","kind":"configmaps"},"code":404}}`
	forbidden = `{"ErrStatus":{"metadata":{},"status":"Failure","message":"configmaps \"cfg\" is forbidden","reason":"Forbidden","code":403}}`
	bare404   = `{"ErrStatus":{"code":404}}`
)

func TestDecode(t *testing.T) {
	type want int
	const (
		object want = iota
		isNotFound
		isForbidden
		otherError
	)
	for _, tc := range []struct {
		name    string
		op      string
		content string // raw JSON content
		want    want
	}{
		{"object", sdk.OpResponse, cm, object},
		{"string", sdk.OpResponse, jsonString(cm), object},
		{"one-element list", sdk.OpResponse, `[` + jsonString(cm) + `]`, object},
		{"objectresp", sdk.OpResponse, `{"Object":` + cm + `,"Err":null}`, object},
		{"objectresp without Err", sdk.OpResponse, `{"Object":` + cm + `}`, object},
		{"objectresp in a string", sdk.OpResponse, jsonString(`{"Object":` + cm + `,"Err":null}`), object},
		{"errstatus not found", sdk.OpResponse, notFound, isNotFound},
		{"errstatus 404 without reason", sdk.OpResponse, bare404, isNotFound},
		{"errstatus forbidden", sdk.OpResponse, forbidden, isForbidden},
		{"errstatus in a string", sdk.OpResponse, jsonString(notFound), isNotFound},
		{"objectresp not found, empty object beside", sdk.OpResponse, `{"Object":{},"Err":` + notFound + `}`, isNotFound},
		{"objectresp not found, null object", sdk.OpResponse, `{"Object":null,"Err":` + notFound + `}`, isNotFound},
		{"objectresp forbidden", sdk.OpResponse, `{"Object":{"metadata":{}},"Err":` + forbidden + `}`, isForbidden},
		{"objectresp plain go error", sdk.OpResponse, `{"Object":null,"Err":{}}`, otherError},
		{"objectresp without object", sdk.OpResponse, `{"Object":null,"Err":null}`, otherError},
		{"empty list", sdk.OpResponse, `[]`, isNotFound},
		{"longer list", sdk.OpResponse, `[` + cm + `,` + cm + `]`, otherError},
		{"OK", sdk.OpResponse, `"OK"`, otherError},
		{"number", sdk.OpResponse, `42`, otherError},
		{"malformed errstatus", sdk.OpResponse, `{"ErrStatus":7}`, otherError},
		{"nested too deep", sdk.OpResponse, `[[[[[` + cm + `]]]]]`, otherError},
		{"error text not found", sdk.OpError, jsonString("default/configmap/cfg not found in the local store, and the cloud is disconnected"), isNotFound},
		{"error text timeout", sdk.OpError, jsonString("timeout"), otherError},
		{"error errstatus", sdk.OpError, jsonString(forbidden), isForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := sdk.NewMessage("q").BuildRouter("metamanager", sdk.GroupMeta, "default/configmap/cfg", tc.op)
			resp.Content = []byte(tc.content)
			raw, err := Decode(resp)
			switch tc.want {
			case object:
				if err != nil || string(raw) != cm {
					t.Fatalf("Decode = %s, %v; want the configMap", raw, err)
				}
				return
			case isNotFound:
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("err = %v, want not found", err)
				}
			case isForbidden:
				if !apierrors.IsForbidden(err) || errors.Is(err, ErrNotFound) {
					t.Fatalf("err = %v, want forbidden", err)
				}
			case otherError:
				if err == nil || errors.Is(err, ErrNotFound) {
					t.Fatalf("err = %v, want an error other than not found", err)
				}
			}
			if raw != nil {
				t.Fatalf("an error answer gave an object %s", raw)
			}
		})
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{cm, notFound, `{"Object":{},"Err":` + forbidden + `}`, `[]`, `"x"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, content []byte) {
		resp := sdk.NewMessage("q").BuildRouter("metamanager", sdk.GroupMeta, "default/configmap/cfg", sdk.OpResponse)
		resp.Content = content
		raw, err := Decode(resp)
		if (err == nil) == (raw == nil) {
			t.Fatalf("Decode(%q) = %s, %v: want exactly one of object and error", content, raw, err)
		}
	})
}
