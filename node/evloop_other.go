//go:build !linux

package node

import (
	"errors"
	"io"
	"net"
)

// Event loops exist on Linux only; elsewhere every connection has its own goroutine.
const loopsSupported = false

type evLoop struct{ local func() bool }

func newEvLoop(*connServer) (*evLoop, error) { return nil, errors.New("event loops need Linux") }

func (l *evLoop) closeFDs()                            {}
func (l *evLoop) run()                                 {}
func (l *evLoop) add(int, func(io.Writer) connHandler) {}
func (l *evLoop) startClosing()                        {}
func (l *evLoop) resetAll()                            {}
func dupFD(net.Conn) (int, error)                      { return -1, errors.New("event loops need Linux") }
func closeFD(int)                                      {}
