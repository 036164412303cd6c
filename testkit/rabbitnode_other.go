//go:build !linux

package testkit

import "syscall"

// dieWithParent has no portable equivalent off Linux: a node of a killed
// test process outlives it there.
func dieWithParent() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
