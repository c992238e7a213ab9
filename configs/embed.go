// Package configs holds the configuration edgehive embeds in its binary.
package configs

import _ "embed"

// DefaultFilename names the embedded default config in diagnostics.
const DefaultFilename = "configs/edgehive.hcl"

// Default is the embedded default config (configs/edgehive.hcl): all six
// plugins with default paths and settings, so that a bare `edgehive run`
// works on a standard install. Treat it as read-only.
//
//go:embed edgehive.hcl
var Default []byte

// CloudhiveFilename names cloudhive's embedded default config in diagnostics.
const CloudhiveFilename = "configs/cloudhive.hcl"

// Cloudhive is cloudhive's embedded default config (configs/cloudhive.hcl).
//
//go:embed cloudhive.hcl
var Cloudhive []byte
