"""The ingress router shared by the platforms: Host -> revision -> a ready pod or the activator; it imports
`serving` and `controller.reconcile`, and each platform feeds it revisions, pods and routing modes.
"""
