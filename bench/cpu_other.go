//go:build !unix

package bench

import "time"

// selfCPU is unknown here; the CPU columns then read 0.
func selfCPU() time.Duration { return 0 }

// brokerCPU is unknown here.
func brokerCPU(int) time.Duration { return 0 }

// listenerPID is unknown here.
func listenerPID(int) int { return 0 }
