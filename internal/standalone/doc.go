// Package standalone holds one repository-wide test: no tracked file may
// refer to files outside the repository (a sibling checkout, a machine's
// home or work directory, documents that only exist on one machine). The
// project's own references live in docs/. The package has no code of its
// own.
package standalone
