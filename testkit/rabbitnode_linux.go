package testkit

import "syscall"

// dieWithParent makes the kernel kill the node when the test process ends,
// however it ends.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
