package leat;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Kafka's Java client against Leat's listener. Every command takes the
 * listener's address and the token first, prints what the Rust test asserts
 * on, and exits non-zero with the reason when something fails.
 *
 * <pre>
 *   produce   ADDR TOKEN TOPIC N          idempotent producer, keys k0..k(N-1)
 *   consume   ADDR TOKEN TOPIC GROUP N    group consumer: reads N, commits
 *   transform ADDR TOKEN IN OUT GROUP N   transactional consume-transform-produce
 *                                         of N events (upper case), then one
 *                                         aborted transaction
 *   committed ADDR TOKEN TOPIC N          read_committed reader of N values
 * </pre>
 */
public final class KafkaCheck {
    private KafkaCheck() {}

    static Properties common(String addr, String token) {
        Properties p = new Properties();
        p.put("bootstrap.servers", addr);
        p.put("security.protocol", "SASL_PLAINTEXT");
        p.put("sasl.mechanism", "PLAIN");
        p.put("sasl.jaas.config",
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
                + "username=\"java\" password=\"" + token + "\";");
        return p;
    }

    static KafkaProducer<String, String> producer(String addr, String token, String txnId) {
        Properties p = common(addr, token);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        if (txnId != null) {
            p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
            p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "30000");
        }
        return new KafkaProducer<>(p);
    }

    static KafkaConsumer<String, String> consumer(String addr, String token, String group, boolean committed) {
        Properties p = common(addr, token);
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, committed ? "read_committed" : "read_uncommitted");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return new KafkaConsumer<>(p);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            fail("usage: KafkaCheck produce|consume|transform|committed ADDR TOKEN ...");
        }
        String addr = args[1];
        String token = args[2];
        switch (args[0]) {
            case "produce" -> produce(addr, token, args[3], Integer.parseInt(args[4]));
            case "consume" -> consume(addr, token, args[3], args[4], Integer.parseInt(args[5]));
            case "transform" -> transform(addr, token, args[3], args[4], args[5], Integer.parseInt(args[6]));
            case "committed" -> committed(addr, token, args[3], Integer.parseInt(args[4]));
            default -> fail("unknown command " + args[0]);
        }
    }

    static void produce(String addr, String token, String topic, int n) throws Exception {
        try (KafkaProducer<String, String> p = producer(addr, token, null)) {
            List<java.util.concurrent.Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                sent.add(p.send(new ProducerRecord<>(topic, "k" + i, "java-" + i)));
            }
            p.flush();
            for (var f : sent) {
                RecordMetadata m = f.get();
                if (m.offset() < 0) {
                    fail("a non-transactional record has no offset: " + m);
                }
            }
        }
        System.out.println("produced " + n);
    }

    /** Polls `c` until `n` records arrived or 60 s passed. */
    static List<ConsumerRecord<String, String>> take(KafkaConsumer<String, String> c, int n) {
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 60_000;
        while (got.size() < n && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) {
                got.add(r);
            }
        }
        if (got.size() < n) {
            fail("got " + got.size() + " of " + n + " records in 60 s");
        }
        return got;
    }

    static void consume(String addr, String token, String topic, String group, int n) {
        try (KafkaConsumer<String, String> c = consumer(addr, token, group, false)) {
            c.subscribe(List.of(topic));
            List<ConsumerRecord<String, String>> got = take(c, n);
            c.commitSync();
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(c.assignment());
            long total = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            System.out.println("consumed " + got.size() + " committed " + total);
        }
    }

    static void transform(String addr, String token, String in, String out, String group, int n) {
        try (KafkaConsumer<String, String> c = consumer(addr, token, group, true);
             KafkaProducer<String, String> p = producer(addr, token, "java-transform")) {
            p.initTransactions();
            c.subscribe(List.of(in));
            int done = 0;
            long deadline = System.currentTimeMillis() + 60_000;
            while (done < n && System.currentTimeMillis() < deadline) {
                ConsumerRecords<String, String> batch = c.poll(Duration.ofMillis(200));
                if (batch.isEmpty()) {
                    continue;
                }
                p.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
                for (ConsumerRecord<String, String> r : batch) {
                    p.send(new ProducerRecord<>(out, r.key(), r.value().toUpperCase()));
                    offsets.put(new TopicPartition(r.topic(), r.partition()),
                        new OffsetAndMetadata(r.offset() + 1));
                    done++;
                }
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                p.commitTransaction();
            }
            if (done < n) {
                fail("transformed " + done + " of " + n + " in 60 s");
            }
            // One more transaction, aborted: nothing of it may be seen.
            p.beginTransaction();
            p.send(new ProducerRecord<>(out, "aborted", "ABORTED"));
            p.flush();
            p.abortTransaction();
            System.out.println("transformed " + done);
        }
    }

    static void committed(String addr, String token, String topic, int n) {
        try (KafkaConsumer<String, String> c = consumer(addr, token, null, true)) {
            List<TopicPartition> parts = new ArrayList<>();
            c.partitionsFor(topic).forEach(i -> parts.add(new TopicPartition(topic, i.partition())));
            c.assign(parts);
            c.seekToBeginning(parts);
            List<ConsumerRecord<String, String>> got = take(c, n);
            // Anything beyond n (an aborted record, a duplicate) within 2 s more.
            long until = System.currentTimeMillis() + 2_000;
            while (System.currentTimeMillis() < until) {
                c.poll(Duration.ofMillis(200)).forEach(got::add);
            }
            TreeMap<String, Integer> counts = new TreeMap<>();
            got.forEach(r -> counts.merge(r.value(), 1, Integer::sum));
            System.out.println("read " + got.size() + " distinct " + counts.size());
            counts.forEach((v, k) -> System.out.println(v + " " + k));
        }
    }

    static void fail(String message) {
        System.err.println(message);
        System.exit(1);
    }
}
