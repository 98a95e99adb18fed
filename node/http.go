package node

import "net/http"

func (n *Node) httpHandler() http.Handler {
	mux := http.NewServeMux()
	return mux
}
