"""The Kubernetes API as the platform: one adapter over kubernetes-asyncio (`api`), informers that list and
watch with resourceVersion (`informer`), and the components' view of revisions and pods (`platform`).
"""
