"""A real Kubernetes control plane for tests: etcd, kube-apiserver and kube-controller-manager on loopback,
with a test node agent in place of the kubelet that runs pods as local processes in network namespaces.
"""
