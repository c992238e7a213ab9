package edgecontroller

import (
	"context"
	"fmt"

	authv1 "k8s.io/api/authentication/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/edgehive/edgehive/sdk"
)

// --- Queries -------------------------------------------------------------------

// query answers from the caches. A node reads its own Node and pods, the
// configMaps and secrets its pods use, any service and endpoints, and tokens
// for the service accounts of its pods. Not found and refusals are answered
// with the API error as content.
func (c *Controller) query(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) {
	if res.IsList() {
		c.refuse(ctx, node, msg, badRequest("list queries (%s) are not supported", res))
		return
	}
	var (
		obj    runtime.Object
		err    error
		withRV bool
	)
	switch res.Type {
	case sdk.ResourceConfigMap:
		if !c.nodeUses(node, indexByConfigMap, res.Namespace, res.Name) {
			err = forbidden("configmaps", res.Name, "no pod on node %q uses configmap %s/%s", node, res.Namespace, res.Name)
			break
		}
		obj, err = c.cmLister.ConfigMaps(res.Namespace).Get(res.Name)
		withRV = true
	case sdk.ResourceSecret:
		if !c.nodeUses(node, indexBySecret, res.Namespace, res.Name) {
			err = forbidden("secrets", res.Name, "no pod on node %q uses secret %s/%s", node, res.Namespace, res.Name)
			break
		}
		obj, err = c.secLister.Secrets(res.Namespace).Get(res.Name)
		withRV = true
	case sdk.ResourceService:
		if c.svcLister != nil {
			obj, err = c.svcLister.Services(res.Namespace).Get(res.Name)
		} else {
			obj, err = c.client.CoreV1().Services(res.Namespace).Get(ctx, res.Name, metav1.GetOptions{})
		}
	case sdk.ResourceEndpoints:
		if c.epLister != nil {
			obj, err = c.epLister.Endpoints(res.Namespace).Get(res.Name)
		} else {
			obj, err = c.client.CoreV1().Endpoints(res.Namespace).Get(ctx, res.Name, metav1.GetOptions{}) //nolint:staticcheck // v1 Endpoints, as the edge serves
		}
	case sdk.ResourcePod:
		obj, err = c.nodePod(ctx, node, res.Namespace, res.Name)
	case sdk.ResourceNode:
		if err = ownNode(node, res); err == nil {
			obj, err = c.nodeLister.Get(node)
			if apierrors.IsNotFound(err) {
				obj, err = c.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
			}
		}
	case resourceSAToken:
		obj, err = c.serviceAccountToken(ctx, node, msg, res)
	default:
		err = badRequest("query on %s is not supported", res.Type)
	}
	if err != nil {
		if apierrors.IsForbidden(err) || apierrors.IsBadRequest(err) {
			c.log.Warn("query refused", "node", node, "msg", msg.String(), "error", err)
		}
		c.respondError(ctx, node, msg, err)
		return
	}
	b, encErr := wireObject(obj)
	if encErr != nil {
		c.respondError(ctx, node, msg, fmt.Errorf("encode answer: %w", encErr))
		return
	}
	rv := ""
	if m, ok := obj.(metav1.Object); ok && withRV {
		rv = m.GetResourceVersion()
	}
	c.respond(ctx, node, msg, b, rv)
}

// serviceAccountToken creates a token for a service account used by a pod on
// node, bound to that pod, as the Node authorizer allows a kubelet.
func (c *Controller) serviceAccountToken(ctx context.Context, node string, msg *sdk.Message, res sdk.Resource) (*authv1.TokenRequest, error) {
	tr := &authv1.TokenRequest{}
	if err := decodeObject(msg, tr); err != nil {
		return nil, err
	}
	ref := tr.Spec.BoundObjectRef
	if ref == nil || ref.Kind != "Pod" || ref.Name == "" {
		return nil, forbidden("serviceaccounts/token", res.Name, "node %q may only request tokens bound to its pods", node)
	}
	pod, err := c.nodePod(ctx, node, res.Namespace, ref.Name)
	if err != nil {
		return nil, err
	}
	if ref.UID != "" && ref.UID != pod.UID {
		return nil, forbidden("serviceaccounts/token", res.Name, "pod %s/%s has another UID", res.Namespace, ref.Name)
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if sa != res.Name {
		return nil, forbidden("serviceaccounts/token", res.Name, "pod %s/%s runs as service account %q", res.Namespace, ref.Name, sa)
	}
	req := &authv1.TokenRequest{Spec: tr.Spec}
	req.Spec.BoundObjectRef = &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	return c.client.CoreV1().ServiceAccounts(res.Namespace).CreateToken(ctx, res.Name, req, metav1.CreateOptions{})
}
