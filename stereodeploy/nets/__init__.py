"""Framework networks. Import the framework module you need (torch_net, tf_net); this package imports neither."""
