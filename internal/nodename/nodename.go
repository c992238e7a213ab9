// Package nodename checks Kubernetes node names where the cloud takes one
// from the outside (a certificate's CN, a CONNECT target, a bootstrap
// request): a DNS-1123 subdomain, as the API server requires, which also
// keeps "/" and other separators out of resource keys.
package nodename

// maxLen is the longest DNS-1123 subdomain.
const maxLen = 253

// Valid reports whether n is a DNS-1123 subdomain: dot-separated labels of
// lower-case letters, digits and '-', each starting and ending with a letter
// or digit, 253 characters at most.
func Valid(n string) bool {
	if n == "" || len(n) > maxLen {
		return false
	}
	labelStart := 0
	for i := 0; i <= len(n); i++ {
		if i < len(n) && n[i] != '.' {
			b := n[i]
			if (b < 'a' || b > 'z') && (b < '0' || b > '9') && b != '-' {
				return false
			}
			continue
		}
		// n[labelStart:i] is one label.
		if i == labelStart || n[labelStart] == '-' || n[i-1] == '-' {
			return false
		}
		labelStart = i + 1
	}
	return true
}
