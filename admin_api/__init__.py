"""The management API under /v1/admin/: operations on the control plane for staff scripts
(load a model profile on nodes, follow the load). It sits on top of both planes: it answers
in the data plane's OpenAI error shape and acts through the control plane's services."""
