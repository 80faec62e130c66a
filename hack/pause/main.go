// Command pause is the first process of every pod on the local cluster's node, the stand-in for
// registry.k8s.io/pause (hack/images.sh builds it into that image, as /pause). It holds the pod's
// namespaces open, reaps the orphans a pod's processes leave behind (it is PID 1 of the pod), and exits 0
// when the runtime stops the sandbox with SIGTERM or SIGINT.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 16)
	signal.Notify(signals, syscall.SIGCHLD, syscall.SIGINT, syscall.SIGTERM)
	for s := range signals {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reapChildren()
	}
}

// reapChildren waits for every child that has exited: signals coalesce, so one SIGCHLD may stand for many.
func reapChildren() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
