"""ns-hello: a plugbox plugin in the plugbox_plugins namespace. plugbox never imports it."""
