"""A real Kafka for tests: one KRaft node (controller and broker in one JVM) on loopback, from Maven Central's
jars, and the tests of the Kafka backend of Brokers against it.
"""
