package metamanager

import (
	"encoding/json"
	"testing"

	"github.com/edgehive/edgehive/sdk"
)

// FuzzReadCloudAnswer: any content the cloud sends is read without a panic,
// and an object it yields is a JSON object.
func FuzzReadCloudAnswer(f *testing.F) {
	for _, seed := range []string{
		`{"Object":{"metadata":{"name":"n"}},"Err":null}`,
		`{"Object":{},"Err":{"ErrStatus":{"message":"x not found","reason":"NotFound","code":404}}}`,
		`{"ErrStatus":{"code":403}}`, `["{\"a\":1}"]`, `[]`, `[{},{}]`, `"OK"`, `"{\"a\":[1]}"`, `null`, `{`, `"[[[\"[]\"]]]"`,
	} {
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, content string, isErr bool) {
		msg := sdk.NewMessage("").BuildRouter("edgecontroller", sdk.WireGroupResource, "default/configmap/c", sdk.OpResponse)
		if isErr {
			msg.Router.Operation = sdk.OpError
		}
		msg.Content = json.RawMessage(content)
		ans := readCloudAnswer(msg)
		if ans.obj != nil {
			var o map[string]json.RawMessage
			if json.Unmarshal(ans.obj, &o) != nil {
				t.Fatalf("object %q from %q is not a JSON object", ans.obj, content)
			}
			if ans.errText != "" {
				t.Fatalf("both an object and an error from %q", content)
			}
		}
	})
}
